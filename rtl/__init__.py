"""The Amaranth RTL of the Datapath: the command table (``commands``), the MAC array
(``mac_array``), the range unit, the rescale, update and divide lanes, the ``Datapath`` top
that streams them behind one command queue (``datapath``), its schedule (``schedule``: the
cycles, without Amaranth) and the Verilog it is written as (``verilog``).
docs/datapath.md describes it; ``nitihw verilog`` writes it."""
