"""Run inside a venv with zigzag-dse (not nitihw's): ZigZag's best mapping of each GEMM on a
16x16 output-stationary array with nitihw's three buffers and DRAM, and the elements that
mapping moves across the DRAM boundary. Called by bench/traffic.py --zigzag.

usage: python zigzag_worker.py GEMMS.json OUT.json WORKDIR
GEMMS.json: the array, the buffer bytes, ``gemms``: [[name, M, K, N], ...] and ``opt`` (ZigZag's
objective: energy, the default, or latency); OUT.json: per GEMM, per operand (I, W, O), the
elements moved at the DRAM level in each of ZigZag's four directions (``RD_OUT_TO_LOW``: read
from DRAM, ``WR_IN_BY_LOW``: written to it, ...), and ``cycles``: its ideal, computing and total
latency.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _memory(size_bits, operands, ports, served, cost=1.0, **extra):
    """One memory of ZigZag's hardware description; ``ports``: (kind, [allocations], bw)."""
    named = []
    count = {"r": 0, "w": 0, "rw": 0}
    for kind, allocation, bw in ports:
        count[kind] += 1
        named.append(
            {
                "name": f"{kind}_port_{count[kind]}",
                "type": {"r": "read", "w": "write", "rw": "read_write"}[kind],
                "bandwidth_min": 8,
                "bandwidth_max": bw,
                "allocation": allocation,
            }
        )
    return {
        "size": size_bits,
        "r_cost": cost,
        "w_cost": cost,
        "area": 0,
        "latency": 1,
        "operands": operands,
        "ports": named,
        "served_dimensions": served,
        **extra,
    }


def hardware(spec: dict) -> dict:
    """The array (rows x cols PEs, each with its accumulator), the three buffers of nitihw's
    estimate, and DRAM, its accesses costed 1,000x a buffer's (ZigZag's energy search then
    minimises off-chip traffic first)."""
    acc = spec["accumulator_bits"]
    both = ["D1", "D2"]
    # the Datapath's ports: an operand per PE row (A) and column (B) a cycle, a row of
    # accumulators (C): 128, 128 and 512 bits on 16x16
    a_port, b_port, c_port = spec["rows"] * 8, spec["cols"] * 8, spec["cols"] * acc
    return {
        "name": "nitihw_os",
        "memories": {
            "acc": _memory(
                acc, ["O"],
                [("r", ["O, tl"], acc), ("r", ["O, th"], acc), ("w", ["O, fh"], acc),
                 ("w", ["O, fl"], acc)],
                [], cost=0.01, auto_cost_extraction=False,
            ),
            "ifmap": _memory(spec["ifmap"] * 8, ["I1"],
                             [("r", ["I1, tl"], a_port), ("w", ["I1, fh"], a_port)], both),
            "filter": _memory(spec["filter"] * 8, ["I2"],
                              [("r", ["I2, tl"], b_port), ("w", ["I2, fh"], b_port)], both),
            "ofmap": _memory(
                spec["ofmap"] * 8, ["O"],
                [("r", ["O, tl"], c_port), ("r", ["O, th"], c_port), ("w", ["O, fl"], c_port),
                 ("w", ["O, fh"], c_port)],
                both,
            ),
            "dram": _memory(
                10**11, ["I1", "I2", "O"],
                [("rw", ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl",
                         "O, th"], 128)],
                both, cost=1000.0,
            ),
        },
        "operational_array": {
            "input_precision": [8, 8],
            "unit_energy": 0.1,
            "unit_area": 1,
            "dimensions": both,
            "sizes": [spec["rows"], spec["cols"]],
        },
    }  # fmt: skip


MAPPING = """- name: default
  spatial_mapping:
    D1:
      - M, {rows}
    D2:
      - N, {cols}
  memory_operand_links:
    O: O
    W: I2
    I: I1
"""


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    work = Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    import yaml
    from zigzag.api import get_hardware_performance_zigzag
    from zigzag.mapping.data_movement import DataDirection, DataMoveAttr

    hw = work / "hardware.yaml"
    hw.write_text(yaml.safe_dump(hardware(spec), sort_keys=False))
    mp = work / "mapping.yaml"
    mp.write_text(MAPPING.format(rows=spec["rows"], cols=spec["cols"]))
    out = []
    for i, (name, m, k, n) in enumerate(spec["gemms"]):
        layer = {
            "id": 0,
            "name": name,
            "operator_type": "Gemm",
            "equation": "O[m][n]+=I[m][k]*W[k][n]",
            "loop_dims": ["M", "N", "K"],
            "loop_sizes": [m, n, k],
            # one byte per element everywhere, partial sums too: the words SCALE-Sim counts
            "operand_precision": {"I": 8, "W": 8, "O": 8, "O_final": 8},
            "operand_source": {"I": 0, "W": 0},
        }
        _, _, cmes = get_hardware_performance_zigzag(
            workload=[layer],
            accelerator=str(hw),
            mapping=str(mp),
            opt=spec.get("opt", "energy"),
            dump_folder=str(work / f"g{i}"),
            pickle_filename=str(work / f"g{i}.pickle"),
        )
        cme = _first_cme(cmes)
        moved = {}
        for layer_op in cme.layer.layer_operands:
            top = cme.mapping.unit_mem_data_movement[layer_op][-1]
            amount = top.get_attribute(DataMoveAttr.DATA_TRANS_AMOUNT_PER_PERIOD)
            count = top.get_attribute(DataMoveAttr.DATA_TRANS_PERIOD_COUNT)
            moved[str(layer_op)] = {  # elements across the DRAM boundary, by direction
                d.name: int(amount.get(d) * count.get(d)) for d in DataDirection
            }
        moved["cycles"] = {  # ZigZag's latency: computing alone, and with loading/offloading
            "ideal": float(cme.ideal_cycle),
            "compute": float(cme.latency_total0),
            "total": float(cme.latency_total2),
        }
        out.append(moved)
        print(name, moved, flush=True)
    Path(sys.argv[2]).write_text(json.dumps(out))


def _first_cme(cmes):
    """The layer's cost model evaluation: ``cmes[0]`` is the sum over the workload's layers
    and, beside it, each layer's ``(cme, extra)``."""
    return cmes[0][1][0][0]


if __name__ == "__main__":
    main()
