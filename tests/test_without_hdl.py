"""Training, the cycle model and the estimate must not need the HDL toolchain: the GPU machines
(bench/gpu_session.sh) have no Amaranth, and a user of the golden model needs none."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BLOCKED = """
import sys
class NoHdl:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("amaranth", "cocotb", "cocotb_tools"):
            raise ImportError(f"{name} is blocked: this path must not need the HDL toolchain")
sys.meta_path.insert(0, NoHdl())
from nitihw.sim.command.cli import main
out = sys.argv[1]
rc = main(["train", "--model", "cnn-digits", "--dataset", "digits", "--steps", "2", "--out", out])
rc |= main(["train", "--model", "mlp-digits", "--dataset", "digits", "--steps", "2",
            "--profile", "nitro-d", "--out", out + "-nitro"])
rc |= main(["estimate", "--model", "lenet", "--batch", "8", "--out", out + "-estimate"])
raise SystemExit(rc)
"""


def test_training_and_estimates_need_no_hdl_library(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED, str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
