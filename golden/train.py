"""The training run: batches, the mu schedule, evaluation, checkpoints and the result record.

The step itself is :meth:`nitihw.golden.network.IntegerNetwork.train_step`; this module feeds it.
Batch order comes from ``default_rng([seed, epoch])``, so a run resumed from a checkpoint sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nitihw.golden.backend import AccumulatorOverflowError, Backend, NumpyBackend
from nitihw.golden.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    RunState,
    check_arrays_fit,
    check_arrays_range,
    check_state_sense,
    damaged,
    encode_checkpoint,
    read_checkpoint,
    state_ranges,
    write_checkpoint,
)
from nitihw.golden.datasets import Dataset
from nitihw.golden.errors import InternalError, UserError
from nitihw.golden.layers import StepContext
from nitihw.golden.limits import LIMITS, LimitError, check, current_names
from nitihw.golden.models import get_model_spec
from nitihw.golden.network import build_network
from nitihw.golden.profiles import PROFILES, get_profile

EVAL_BATCH = 256


class MuSchedule:
    """The learning rate of NITI, in bits, per epoch: ``"5,4@100,3@150"`` means mu = 5 from
    epoch 0, 4 from epoch 100, 3 from epoch 150."""

    def __init__(self, text: str):
        self.text = str(text).strip()
        entries = []
        for i, part in enumerate(self.text.split(",")):
            value, _, start = part.strip().partition("@")
            try:
                mu = int(value)
                epoch = int(start) if start else 0
            except ValueError:
                raise ValueError(
                    f"mu schedule {self.text!r}: bad entry {part.strip()!r} "
                    "(expected MU or MU@EPOCH)"
                ) from None
            if i == 0 and epoch != 0:
                raise ValueError(
                    f"mu schedule {self.text!r}: the first entry must start at epoch 0"
                )
            if entries and epoch <= entries[-1][0]:
                raise ValueError(f"mu schedule {self.text!r}: epochs must increase")
            if not LIMITS["mu"].ok(mu):
                raise ValueError(
                    f"mu schedule {self.text!r}: mu {mu} is outside -8..15 "
                    f"(must be {LIMITS['mu'].describe()})"
                )
            entries.append((epoch, mu))
        self.entries = entries

    def __call__(self, epoch: int) -> int:
        return [mu for start, mu in self.entries if start <= epoch][-1]


@dataclass
class TrainConfig:
    model: str
    dataset: str
    backend: str = "golden"
    profile: str = "niti"
    epochs: int = 1
    batch: int = 64
    seed: int = 0
    mu: str | None = None  # None: the model's default schedule
    steps: int | None = None  # stop after this many steps in total
    weight_bits: int = 8
    operand_bits: int = 8  # NITI profiles: activations, errors, weights in +-(2^(b-1) - 1)
    accumulator_bits: int = 32
    overflow: str | None = None  # None: the profile's policy ("error" except nitro-d)
    lr: float = 0.05  # float32 twin only
    momentum: float = 0.9  # float32 twin only
    weight_decay: float = 0.0  # float32 twin only
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at each epoch's end only)

    def validate(self) -> None:
        get_model_spec(self.model)
        profile = get_profile(self.profile)
        schedule = MuSchedule(self.mu_text)
        if profile.method == "nitro-d":
            for epoch, mu in schedule.entries:
                if not 0 <= mu <= 30:
                    raise LimitError(
                        f"--mu {self.mu_text}: nitro-d's mu is log2(lr_inv) and must be in "
                        f"0..30, got {mu} from epoch {epoch}"
                    )
        if profile.method in ("wage", "nitro-d") and self.weight_bits != 8:
            raise LimitError(
                f"--weight-bits {self.weight_bits}: profile {self.profile} has its own weights"
            )
        for name in (
            "epochs",
            "batch",
            "seed",
            "accumulator_bits",
            "lr",
            "momentum",
            "weight_decay",
        ):
            check(name, getattr(self, name), "--" + name.replace("_", "-"))
        if self.steps is not None:
            check("steps", self.steps, "--steps")
        check("checkpoint_every", self.checkpoint_every, "--checkpoint-every")
        if self.weight_bits not in (8, 16):
            raise LimitError(f"--weight-bits must be 8 or 16, got {self.weight_bits!r}")
        check("train_operand_bits", self.operand_bits, "--operand-bits")
        if not get_profile(self.profile).exact and (self.operand_bits, self.weight_bits) != (8, 8):
            raise LimitError(
                f"profile {self.profile} reproduces NITI's 2021 code: it has 8-bit operands and "
                "int8 weights only (no --operand-bits or --weight-bits)"
            )
        if self.operand_bits != 8:
            if get_profile(self.profile).method != "niti":
                raise LimitError(
                    f"--operand-bits {self.operand_bits}: profile {self.profile} has its own "
                    "widths; narrower operands are for niti, niti-ref and niti-2020"
                )
            if self.weight_bits != 8:
                raise LimitError(
                    f"--operand-bits {self.operand_bits} needs --weight-bits 8 (16-bit masters "
                    "are rounded to int8 weights)"
                )

    def __post_init__(self):
        if self.overflow is None:
            known = self.profile in PROFILES
            self.overflow = get_profile(self.profile).overflow if known else "error"

    @property
    def mu_text(self) -> str:
        if self.mu is not None:
            return self.mu
        return get_profile(self.profile).default_mu or get_model_spec(self.model).mu

    def identity(self) -> dict:
        """The settings a checkpoint must share with the run resuming it."""
        keys = (
            "model",
            "dataset",
            "profile",
            "batch",
            "seed",
            "weight_bits",
            "accumulator_bits",
            "overflow",
            "lr",
            "momentum",
            "weight_decay",
        )
        narrow = {"operand_bits": self.operand_bits} if self.operand_bits != 8 else {}
        return {k: getattr(self, k) for k in keys} | {"mu": self.mu_text} | narrow


def weights_sha256(weights: list[np.ndarray]) -> str:
    """SHA-256 of all weights in layer order, as little-endian bytes of their storage type."""
    h = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w)
        h.update(w.astype(w.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, cfg: TrainConfig, net, state: RunState) -> None:
    """Write the run's checkpoint (verified format, the previous one kept:
    :mod:`nitihw.golden.checkpoint`)."""
    write_checkpoint(path, encode_checkpoint(cfg.identity(), asdict(state), net.state()))


def load_checkpoint(path: Path, cfg: TrainConfig, net) -> RunState:
    """Load a checkpoint into ``net`` once every part of it checks out: the archive, the
    manifest, the checksum, this run's settings, the sense of its state and the network's own
    state layout and value ranges (:func:`_check_for_run`)."""
    meta, arrays = read_checkpoint(path)
    _check_for_run(path, cfg, net, meta, arrays)
    try:
        net.load_state(arrays)
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged(path, f"the network refused its state: {exc}") from None
    return RunState(**meta["state"])


def check_resume(path: Path, cfg: TrainConfig) -> RunState:
    """The checkpoint at ``path`` is whole, from this run, and fits the network ``cfg``
    builds: checked before the dataset loads (:func:`train` loads it again, into the net)."""
    spec, profile = get_model_spec(cfg.model), get_profile(cfg.profile)
    kw = {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    net = build_network(spec, profile, cfg.seed, cfg.weight_bits, cfg.operand_bits, **kw)
    net.to_backend(NumpyBackend(cfg.accumulator_bits, cfg.overflow, threads=1))
    meta, arrays = read_checkpoint(path)
    _check_for_run(path, cfg, net, meta, arrays)
    return RunState(**meta["state"])


def _check_for_run(path: Path, cfg: TrainConfig, net, meta: dict, arrays: dict) -> None:
    """What the checksum cannot say (anyone can recompute it): the checkpoint is this run's
    (:func:`_same_run`), its state is one train() can have written with these settings
    (:func:`check_state_sense`), and its arrays are the state of ``net`` (the network ``cfg``
    builds): names, shapes and dtypes, and values its arithmetic can produce."""
    _same_run(path, cfg, meta)
    check_state_sense(
        path,
        meta["state"],
        batch=cfg.batch,
        mu=MuSchedule(cfg.mu_text),
        float_method=get_profile(cfg.profile).method == "float",
        overflow=cfg.overflow,
        version=meta.get("version", 1),
    )
    expected = net.state()
    check_arrays_fit(path, arrays, expected)
    check_arrays_range(path, arrays, state_ranges(net))


def _same_value(a, b) -> bool:
    """Equal as JSON values: 64 is not 64.0, and true is not 1 (a JSON round trip keeps each)."""

    def kind(x):
        return bool if isinstance(x, bool) else float if isinstance(x, float) else type(x)

    return kind(a) is kind(b) and a == b


def _same_run(path: Path, cfg: TrainConfig, meta: dict) -> None:
    mine = cfg.identity()
    theirs = current_names(meta["identity"])  # a checkpoint from before the names were one
    for key in sorted(set(mine) | set(theirs)):
        if key not in mine or key not in theirs or not _same_value(mine[key], theirs[key]):
            raise CheckpointError(
                f"{path}: checkpoint field {key!r} is {theirs.get(key)!r} but this run has "
                f"{mine.get(key)!r} (resume with the same settings, or start a new run without "
                "--resume)"
            )


def evaluate(net, x: np.ndarray, y: np.ndarray, ctx: StepContext, batch: int = EVAL_BATCH) -> float:
    """Top-1 accuracy (first maximum wins ties) in batches of ``batch`` (shifts are per batch).

    Evaluation is not part of the training cost: the backend's trace is detached meanwhile.
    """
    if len(y) == 0:
        return float("nan")
    be = ctx.backend
    trace, be.trace = be.trace, None
    ctx.training = False
    try:
        correct = 0
        for i in range(0, len(y), batch):
            correct += int(np.sum(net.predict(x[i : i + batch], ctx) == y[i : i + batch]))
        be.check_overflows()  # the overflow counts a device kept, read once
    finally:
        ctx.training = True
        be.trace = trace
    return correct / len(y)


class _InterruptAfterStep:
    """Holds a Ctrl-C (SIGINT, or SIGTERM: a kill is a Ctrl-C) until the current step is
    complete, so the checkpoint written on the way out is consistent (a step updates layers one
    by one); a second one stops at once, and then the last checkpoint written stays."""

    requested = False

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):  # a kill is a Ctrl-C
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Silent:
    def start_epoch(self, epoch, epochs, total):
        pass

    def advance(self, n, info):
        pass

    def end_epoch(self, summary):
        pass


def check_input_shape(cfg: TrainConfig, data: Dataset):
    """The model's spec, once it is clear the dataset's images fit the model."""
    spec = get_model_spec(cfg.model)
    if tuple(data.input_shape) != tuple(spec.input_shape):
        h, w, c = spec.input_shape
        raise ValueError(
            f"model {cfg.model!r} expects {h}x{w}x{c} inputs, dataset "
            f"{cfg.dataset!r} has {'x'.join(map(str, data.input_shape))}"
        )
    return spec


@dataclass
class _Run:
    """A training run in progress: what :func:`train` sets up, then runs epoch by epoch, then
    reports."""

    cfg: TrainConfig
    data: Dataset
    backend: Backend
    eval_backend: Backend | None
    net: object
    state: RunState
    ckpt: Path | None
    per_epoch: int
    total: int
    mu: MuSchedule
    ctx: StepContext
    eval_ctx: StepContext
    float_method: bool  # no mu: a float learning rate

    @classmethod
    def start(cls, cfg, data, backend, out_dir, resume, eval_backend) -> _Run:
        """Set-up: the backend, the network on it, the state (a resumed checkpoint's), the
        step count and the contexts."""
        cfg.validate()
        if backend is None:
            backend = NumpyBackend(cfg.accumulator_bits, cfg.overflow)
        if (backend.accumulator.bits, backend.overflow) != (cfg.accumulator_bits, cfg.overflow):
            raise ValueError(
                f"backend has accumulator_bits={backend.accumulator.bits}, "
                f"overflow={backend.overflow!r} but the run asks for "
                f"accumulator_bits={cfg.accumulator_bits}, overflow={cfg.overflow!r}"
            )
        spec = check_input_shape(cfg, data)
        profile = get_profile(cfg.profile)
        net = build_network(
            spec,
            profile,
            cfg.seed,
            cfg.weight_bits,
            cfg.operand_bits,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        if hasattr(net, "prepare"):  # NITRO-D: input statistics of the training images
            net.prepare(data.train_x)
        net.to_backend(backend)
        ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
        state = RunState()
        if resume:
            if ckpt is None:
                raise ValueError("--resume needs --out DIR (where the checkpoint is)")
            state = load_checkpoint(ckpt, cfg, net)
            backend.overflow_events = state.overflow_events
        n = len(data.train_y)
        per_epoch = -(-n // cfg.batch)
        total = per_epoch * cfg.epochs
        if cfg.steps is not None:
            total = min(total, cfg.steps)
        ctx = StepContext(backend, profile, seed=cfg.seed, operand_bits=cfg.operand_bits)
        eval_ctx = ctx
        if eval_backend is not None:
            eval_ctx = StepContext(
                eval_backend, profile, seed=cfg.seed, operand_bits=cfg.operand_bits
            )
        return cls(
            cfg,
            data,
            backend,
            eval_backend,
            net,
            state,
            ckpt,
            per_epoch,
            total,
            MuSchedule(cfg.mu_text),
            ctx,
            eval_ctx,
            profile.method == "float",
        )

    def checkpoint(self, unfinished: float = 0.0) -> None:
        """Save the run; ``unfinished``: seconds of the epoch's loop not yet in the state."""
        if self.ckpt is not None:
            state = self.state
            state.overflow_events = self.backend.overflow_events
            state.seconds += unfinished
            try:
                save_checkpoint(self.ckpt, self.cfg, self.net, state)
            finally:
                state.seconds -= unfinished

    def step(self, idx: np.ndarray) -> None:
        """One training step on the samples ``idx``; the state counts it."""
        cfg, data, state, ctx = self.cfg, self.data, self.state, self.ctx
        ctx.step = state.step
        t_step = time.perf_counter()
        try:
            pred = self.net.train_step(data.train_x[idx], data.train_y[idx], ctx)
            self.backend.check_overflows()  # the overflow counts a device kept, read once
        except AccumulatorOverflowError as exc:
            raise AccumulatorOverflowError(
                exc.tag, exc.count, exc.bits, f"model {cfg.model!r}, step {state.step}: "
            ) from None
        except (UserError, InternalError, KeyboardInterrupt):
            raise
        except Exception as exc:  # validated input: nitihw's own fault
            raise InternalError(
                f"model {cfg.model!r}, step {state.step}: {type(exc).__name__}: {exc}"
            ) from exc
        self.backend.end_step(time.perf_counter() - t_step)
        state.step += 1
        state.epoch_correct += int(np.sum(pred == data.train_y[idx]))
        state.epoch_seen += len(idx)
        state.samples += len(idx)

    def epoch(self, progress, interrupt) -> None:
        """The rest of the current epoch (or up to the step limit), its evaluation when it
        ends, and the checkpoint."""
        cfg, state, ctx, per_epoch = self.cfg, self.state, self.ctx, self.per_epoch
        epoch, first = divmod(state.step, per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.data.train_y))
        ctx.mu = self.mu(epoch)
        mu = {} if self.float_method else {"mu": ctx.mu}
        progress.start_epoch(epoch, cfg.epochs, min(per_epoch, self.total - epoch * per_epoch))
        progress.advance(first, None)
        t0 = time.perf_counter()
        for i in range(first, per_epoch):
            if state.step >= self.total:
                break
            self.step(order[i * cfg.batch : (i + 1) * cfg.batch])
            progress.advance(
                1,
                {"acc": state.epoch_correct / state.epoch_seen, **mu, **self.backend.status()},
            )
            if interrupt.requested:
                break
            every = cfg.checkpoint_every
            if every and state.step % every == 0 and state.step % per_epoch:
                self.checkpoint(time.perf_counter() - t0)
        part = time.perf_counter() - t0
        state.seconds += part
        if state.step % per_epoch == 0:
            test_acc = evaluate(self.net, self.data.test_x, self.data.test_y, self.eval_ctx)
            summary = {
                "epoch": epoch,
                "train_accuracy": state.epoch_correct / state.epoch_seen,
                "test_accuracy": test_acc,
                **mu,
                # the epoch's training loop (evaluation apart; after a resume mid-epoch,
                # only this session's part of it)
                "seconds": round(part, 3),
            }
            state.history.append(summary)
            progress.end_epoch(summary)
            state.epoch_correct = state.epoch_seen = 0
        self.checkpoint()
        if interrupt.requested:
            raise KeyboardInterrupt

    def result(self) -> dict:
        """The run's result record."""
        cfg, state, backend, eval_backend = self.cfg, self.state, self.backend, self.eval_backend
        train_acc = (
            state.epoch_correct / state.epoch_seen
            if state.epoch_seen
            else (state.history[-1]["train_accuracy"] if state.history else float("nan"))
        )
        test_acc = (
            state.history[-1]["test_accuracy"]
            if state.history and state.step % self.per_epoch == 0
            else evaluate(self.net, self.data.test_x, self.data.test_y, self.eval_ctx)
        )
        return {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "backend": backend.name,
            "profile": cfg.profile,
            "epochs": cfg.epochs,
            "batch": cfg.batch,
            "seed": cfg.seed,
            "mu": cfg.mu_text,
            "weight_bits": cfg.weight_bits,
            "operand_bits": cfg.operand_bits,
            "accumulator_bits": cfg.accumulator_bits,
            "steps": state.step,
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
            "weights_sha256": weights_sha256(self.net.stored_weights()),
            "seconds": state.seconds,
            "samples_per_second": state.samples / state.seconds if state.seconds else 0.0,
            "overflow_events": backend.overflow_events,
            # where this session's datapath operations ran (evaluation's too when it runs on
            # the same backend; on another, as eval_datapath_ops)
            "datapath_ops": backend.ledger.as_dict(),
            **(
                {"eval_datapath_ops": eval_backend.ledger.as_dict()}
                if eval_backend is not None and eval_backend is not backend
                else {}
            ),
            "history": state.history,
            **({"cycles": backend.trace.as_dict()} if hasattr(backend.trace, "as_dict") else {}),
        }


def train(
    cfg: TrainConfig,
    data: Dataset,
    backend: Backend | None = None,
    out_dir: Path | None = None,
    resume: bool = False,
    progress=None,
    eval_backend: Backend | None = None,
) -> dict:
    """Run (or resume) a training run and return its result record.

    ``backend`` defaults to the golden :class:`NumpyBackend` built from ``cfg``; a backend
    passed in must have the accumulator width and overflow policy ``cfg`` names.
    ``eval_backend`` runs the test-set evaluation (default: ``backend``); a simulating
    backend may hand evaluation to the golden model, which computes the same bits faster.
    A trace sink with ``as_dict()`` attached to ``backend.trace`` is reported as ``cycles``.
    The three parts are :class:`_Run`'s: set-up, the epochs, the result.
    """
    run = _Run.start(cfg, data, backend, out_dir, resume, eval_backend)
    progress = progress or _Silent()
    # BLAS settings are the integer backends' own; the float twins keep BLAS's defaults (their
    # float sums, so their weights, depend on how BLAS splits them)
    integer = get_profile(cfg.profile).integer
    session = run.backend.session() if integer else contextlib.nullcontext()
    with _InterruptAfterStep() as interrupt, session:
        while run.state.step < run.total:
            run.epoch(progress, interrupt)
    return run.result()
