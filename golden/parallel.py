"""Threads for the golden model: BLAS single-threaded, and the model's own workers on top.

OpenBLAS's worker threads spin while they wait for each other. When their cores are taken
(another training, a sweep's other workers, any multi-threaded NumPy job), a step of many
small GEMMs collapses: measured 0.10x of its idle speed next to one 2-thread NumPy process.
So the golden model runs BLAS with one thread and spreads its own work instead: a large GEMM
is cut into row blocks, a long range into element blocks, a convolution's im2col and col2im
into batch blocks, and a weight-gradient GEMM runs alongside its layer's error path; each is
one single-threaded NumPy (or compiled, ``nogil``) call on a :class:`Workers` thread. A worker
that finds its core taken simply waits in the kernel's run queue; nothing spins. Small
operations run on the calling thread. Every block computes exactly what the whole operation
would, so the bits never depend on the thread count (the tests run 1, 2 and 3 threads and
compare).

The default thread count is measured, not fixed: :class:`ThreadTuner` times a few steps with
one thread per core and a few with one, every 256 steps, and runs the faster (idle machine: one
per core; next to another busy process: one). docs/benchmarks.md (section golden_speed) holds
the measurements behind it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

#: Below this many elements an elementwise operation is not split (thread hand-off costs
#: more than it saves).
MIN_ELEMENTS = 1 << 16
#: The same for a compiled one-pass loop (golden/kernels.py), which is memory-bound: measured
#: slower split in two than whole at 737k elements (LeNet's largest rescale).
KERNEL_MIN_ELEMENTS = 1 << 21
#: Below this many multiply-adds a GEMM is not split.
MIN_MACS = 1 << 21


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """One worker per available core, at most 4 (the step's operations are too small to
    split further): the most threads the default setting uses."""
    return max(1, min(4, available_cores()))


def check_threads(threads) -> int:
    """``threads`` within its limit (``None``: :func:`default_threads`), or a ValueError."""
    if threads is None:
        return default_threads()
    from nitihw.golden.limits import check

    return check("threads", threads, "--threads")


class Workers:
    """``threads`` workers for blocks of NumPy work; with one thread everything runs inline.

    The pool starts on first use; :meth:`close` ends it (idle workers also end with the
    interpreter).
    """

    def __init__(self, threads: int | None = None):
        self.threads = check_threads(threads)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy = 0  # workers running a submitted task

    def spans(self, n: int, min_size: int) -> list[tuple[int, int]]:
        """``[lo, hi)`` blocks that cover ``0..n``: one per free thread, none under
        ``min_size`` unless ``n`` is."""
        parts = max(1, min(self.threads - self._busy, n // max(min_size, 1)))
        edges = [n * i // parts for i in range(parts + 1)]
        return [(edges[i], edges[i + 1]) for i in range(parts)]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = max(1, self.threads - 1)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="nitihw-golden")
        return self._pool

    def submit(self, fn, *args):
        """``fn(*args)`` on a worker (needs ``threads >= 2``); returns its Future. Until it is
        done, :meth:`run` counts that worker as taken (a block queued behind it would wait)."""
        with self._lock:
            self._busy += 1
        future = self._executor().submit(fn, *args)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future) -> None:
        with self._lock:
            self._busy -= 1

    def run(self, fn, blocks: list) -> list:
        """``[fn(*block) for block in blocks]``, the blocks dealt out over the workers (the
        calling thread is one of them). An exception propagates once every block is done."""
        t = min(self.threads - self._busy, len(blocks))
        if t <= 1:
            return [fn(*b) for b in blocks]
        pool = self._executor()
        results: list = [None] * len(blocks)

        def work(ids):
            for i in ids:
                results[i] = fn(*blocks[i])

        futures = [pool.submit(work, range(i, len(blocks), t)) for i in range(1, t)]
        try:
            work(range(0, len(blocks), t))
        finally:
            wait(futures)  # no block outlives the call, even when one raised
        for f in futures:
            f.result()
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def blas_threads(n: int):
    """A context manager that holds every loaded BLAS at ``n`` threads (threadpoolctl, a
    dependency; where it is missing, as in a bare GPU image, BLAS keeps its own settings)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


class OtherLoad:
    """The cores other processes kept busy between two calls of :meth:`cores`: the machine's
    busy time (``/proc/stat``) less this process's own CPU time (``os.times``), over the wall
    time. Linux only; elsewhere :meth:`cores` gives None."""

    def __init__(self):
        self._last = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:8]]
        except (OSError, ValueError, IndexError):
            return None
        busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
        t = os.times()
        return busy, t.user + t.system, time.monotonic()

    def cores(self) -> float | None:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return None
        return max(0.0, (now[0] - last[0] - (now[1] - last[1])) / (now[2] - last[2]))


class ThreadTuner:
    """The default thread count: whichever of ``most`` and one worker thread ran the last
    trial steps faster, tried again every ``period`` steps.

    On an idle machine the split operations finish sooner with a thread per core; next to
    another busy process a worker that waits for its core holds every split operation up,
    and one thread is faster (docs/benchmarks.md, golden_speed). Which holds changes as
    other jobs come and go, so it is measured, not guessed: each period starts with
    ``trial`` timed steps of each setting (after one untimed step to settle), then runs the
    faster one (one thread by a :attr:`MARGIN`, the step times being noisy). The bits never
    depend on the choice.

    Next to a job that keeps the cores busy, the trial's step times swing by 2-3x from one
    step to the next whichever setting runs (the kernel shares the cores out by the
    millisecond), and the timing comparison becomes a coin toss. So the trial also reads how
    many cores other processes kept busy meanwhile (``others``, :class:`OtherLoad` by
    default): when they left fewer than ``most`` free, one thread runs, whatever the times.
    """

    #: one thread must be this much faster to win: splitting is the better bet on an idle
    #: machine, and where a busy one makes it lose, it loses by far more (golden_speed)
    MARGIN = 0.9

    def __init__(self, most: int, period: int = 256, trial: int = 4, others=None, cores=None):
        if period < 2 * (trial + 1) + 1:
            raise ValueError("the tuning period must leave room for both trials")
        self.most, self.period, self.trial = most, period, trial
        #: cores other processes kept busy since the last call (None: unknown)
        self._others = others if others is not None else OtherLoad().cores
        self._cores = cores or os.cpu_count() or most  # the machine's, as /proc/stat counts
        self.choice = most
        self._step = 0
        self._times: dict[int, list[float]] = {most: [], 1: []}
        self._timing: int | None = None  # the setting the current step is timed for

    def next_threads(self, last_step_seconds: float | None) -> int:
        """Record the last step's time (None: not a measured step), give the next step's
        thread count."""
        if self._timing is not None and last_step_seconds is not None:
            self._times[self._timing].append(last_step_seconds)
        phase = self._step % self.period
        self._step += 1
        self._timing = None
        lap = self.trial + 1
        if self.most == 1:
            return 1
        if phase < 2 * lap:
            if phase == 0:
                self._others()  # the trial's window starts
            setting = self.most if phase < lap else 1
            if phase % lap:  # the first step of each trial settles (caches, pool start)
                self._timing = setting
            return setting
        if phase == 2 * lap:
            many, one = sorted(self._times[self.most]), sorted(self._times[1])
            others = self._others()
            if others is not None and self._cores - others < self.most - 0.5:
                self.choice = 1  # other jobs hold cores the workers would wait for
            elif many and one:
                faster = one[len(one) // 2] < self.MARGIN * many[len(many) // 2]
                self.choice = 1 if faster else self.most
            self._times = {self.most: [], 1: []}
        return self.choice
