"""The command table (rtl/commands.py) is the one source of the Datapath's commands: the RTL's
``Op`` enum, its stream layouts, the schedule, the driver, the cycle model and the estimate
agree with it."""

from __future__ import annotations

from nitihw.rtl import schedule
from nitihw.rtl.commands import BY_NAME, COMMANDS, DATAPATH_TRACE_OPS
from nitihw.rtl.datapath import Op, din_layout, dout_layout
from nitihw.sim.model.cycle_model import ArrayConfig, op_cycles


def test_the_enum_is_the_table():
    assert [(o.name, o.value) for o in Op] == [(c.name, c.opcode) for c in COMMANDS]
    assert len({c.opcode for c in COMMANDS}) == len(COMMANDS) == len(BY_NAME)


def test_each_command_uses_members_the_streams_have():
    din = {name for name, _ in din_layout(4, 4, 8, 32, divide=True)}
    dout = {name for name, _ in dout_layout(4, 32, divide=True)}
    for c in COMMANDS:
        assert not c.din or c.din in din, c
        assert not c.dout or c.dout in dout, c
        assert (c.latency is not None) == (c.unit == "serial" and bool(c.din and c.dout)), c
        assert c.writes != (0, 0) if c.unit == "loader" else c.writes == (0, 0), c


def test_the_schedule_derives_from_the_table():
    assert set(schedule.OPS) == set(BY_NAME)
    assert set(schedule.LOADS) | {"COMPUTE"} | set(schedule.SERIAL) == set(BY_NAME)
    assert schedule.LANES["RESCALE"] == schedule.RESCALE_LATENCY == BY_NAME["RESCALE"].latency
    assert set(schedule.FROM_BUFFER) == {"RESCALE", "DIVIDE"}


def test_every_traced_datapath_operation_has_a_cycle_count():
    """The golden model's operations the table maps commands to are the ones the cycle model
    and the estimate price on the array."""
    array = ArrayConfig(4, 4, 16, 64)
    shapes = {"gemm": (5, 7, 6), "range": (40,), "rescale": (40,), "update": (40,),
              "divide": (40,)}  # fmt: skip
    assert set(shapes) == DATAPATH_TRACE_OPS
    for op, shape in shapes.items():
        extra = {"fed": op == "range", "divide": op == "divide"}
        assert op_cycles(op, shape, array, extra) > 0, op
