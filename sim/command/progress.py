"""Per-epoch progress bar for long runs (stderr), and the end-of-run summary."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Redraws one line per epoch in place on a terminal; on a pipe or file, prints a line
    every ``log_every`` seconds and one when the epoch ends, so logs stay readable."""

    def __init__(self, stream=None, width: int = 30, log_every: float = 15.0):
        self.log_every = log_every
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.epoch = self.epochs = self.total = self.done = 0
        self.info: dict = {}
        self.t0 = self.last = 0.0
        self.done_at_start = 0

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        self.epoch, self.epochs, self.total, self.done = epoch, epochs, total, 0
        self.info = {}
        self.t0 = self.last = time.perf_counter()
        self.done_at_start = 0

    def advance(self, n: int, info: dict | None) -> None:
        self.done += n
        if info is None:  # resumed mid-epoch: these steps were done before
            self.done_at_start = self.done
            return
        self.info = info
        now = time.perf_counter()
        if self.tty and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()
        elif not self.tty and now - self.last > self.log_every and self.done < self.total:
            self.last = now
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        bar = "#" * filled + "." * (self.width - filled)
        rate = (self.done - self.done_at_start) / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0.0
        extra = "  ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.info.items()
        )
        return (
            f"epoch {self.epoch + 1}/{self.epochs} [{bar}] {self.done}/{self.total}  "
            f"{extra}  {rate:.1f} steps/s  eta {eta:.0f}s"
        )

    def end_epoch(self, summary: dict) -> None:
        if self.tty:
            self.stream.write("\r" + self._line(time.perf_counter()) + "\n")
        self.stream.write(
            f"epoch {summary['epoch'] + 1}/{self.epochs}: train acc {summary['train_accuracy']:.4f}"
            f"  test acc {summary['test_accuracy']:.4f}"
            + (f"  mu {summary['mu']}" if "mu" in summary else "")
            + (f"  {summary['seconds']:.1f} s" if "seconds" in summary else "")
            + "\n"
        )
        self.stream.flush()


def format_summary(result: dict) -> str:
    rows = [
        ("model", result["model"]),
        ("dataset", result["dataset"]),
        ("backend", result["backend"]),
        ("profile", result["profile"]),
        ("steps", result["steps"]),
        ("train accuracy", f"{result['train_accuracy']:.4f}"),
        ("test accuracy", f"{result['test_accuracy']:.4f}"),
        ("samples/s", f"{result['samples_per_second']:.1f}"),
        ("seconds", f"{result['seconds']:.2f}"),
        ("overflow events", result["overflow_events"]),
        ("weights_sha256", result["weights_sha256"]),
    ]
    if "datapath_ops" in result:
        rows.insert(-1, ("datapath ops", format_ledger(result["datapath_ops"])))
    if "eval_datapath_ops" in result:
        rows.insert(-1, ("evaluation ops", format_ledger(result["eval_datapath_ops"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def format_ledger(counts: dict) -> str:
    """``{"rtl": 61234, "host": 0}`` as ``61,234 on the rtl, 0 on the host``."""
    return ", ".join(f"{n:,} on the {place}" for place, n in counts.items())


def format_cycles(report: dict) -> str:
    """The per-layer, per-phase cycle table of a run's ``cycles`` record."""
    src = "simulated on the RTL" if report["source"] == "rtl" else "from the cycle model"
    lines = [f"datapath cycles per layer and phase, {report['array']} array, {src}:"]
    headers = ("layer", "phase", "cycles", "MACs", "utilisation")
    rows = [
        (
            r["layer"],
            r["phase"],
            f"{r['cycles']:,}",
            f"{r['macs']:,}",
            f"{100 * r['utilisation']:.1f}%",
        )
        for r in report["by_layer_phase"]
    ]
    rows.append(
        (
            "total",
            "",
            f"{report['total_cycles']:,}",
            f"{sum(r['macs'] for r in report['by_layer_phase']):,}",
            "",
        )
    )
    widths = [max(len(str(x[i])) for x in (headers, *rows)) for i in range(len(headers))]
    for j, row in enumerate((headers, *rows)):
        lines.append(
            "  ".join(
                str(c).rjust(w) if i >= 2 else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    if report["source"] == "rtl":
        lines.append(
            f"operations whose RTL cycles differ from the cycle model: {report['model_mismatches']}"
        )
    return "\n".join(lines)
