"""The golden model's int8 GEMM: one compiled kernel per CPU family, the best the CPU has
chosen at run time, each compiled on first use.

An int8 x int8 product sum is an integer, and the CPUs' integer dot products compute it with
more multiply-adds per instruction, on operands a quarter the size, than float32 FMA: the
integer model's own arithmetic is the fast one, where float32 BLAS (the other exact route,
golden/gemm.py) converts every operand and the result. The kernels (:data:`KERNELS`):

- ``avx512vnni`` (``int8_gemm.c``): ``vpdpbusd``, 64 byte multiply-adds an instruction, A
  offset by +128 to make it unsigned (corrected once per column);
- ``avx2`` (``int8_gemm_avx2.c``), for x86 CPUs without AVX-512 (AMD Zen 2/3, Intel client
  CPUs): operands widened to int16 and ``vpmaddwd``, 16 exact multiply-adds an instruction
  (the byte instruction ``vpmaddubsw`` saturates, so it is not exact for every int8 pair);
- ``i8mm`` (``int8_gemm_i8mm.c``), ARM64 with the matrix-multiply extension: ``smmla``, a
  2 x 8 by 8 x 2 block, 32 multiply-adds an instruction;
- ``neon`` (``int8_gemm_neon.c``), ARM64 with the dot product (v8.2): ``sdot``, 16.

Each is exact in int32 for the K it takes: both operands int8 and ``K < 2^17``, so that every
sum lies within ``K * 128 * 128 < 2^31`` without searching the operands for their magnitudes.
They share one layout (BLIS's): ``B`` packed once per GEMM into panels of ``lanes * nv``
columns, the calling thread then runs the rows, or hands row blocks to the golden model's
workers (the call releases the GIL), each block packing its own rows of ``A``; the result's
min and max are taken as it is stored. ``tests/test_int8_gemm.py`` compares every kernel this
CPU can run with NumPy's int64 matmul on every layout and padding case;
``tests/test_int8_gemm_arm64.py`` runs the ARM64 ones under qemu-aarch64 on x86 machines.

Which one runs: ``NITIHW_KERNELS`` (:data:`CHOICES`): unset or ``auto``, the first of
:data:`KERNELS` for this architecture that this CPU has (its ``/proc/cpuinfo`` flags, then the
library's own check); a kernel's name forces it (``avx2`` on an AVX-512 machine is how CI runs
the AVX2 path); ``blas`` or ``numpy`` none. Without a kernel (none for this CPU, no C compiler
found in ``$CC``, ``cc``, ``gcc``, a failed compilation) the golden model takes the float BLAS
routes instead: same integers. :func:`status` says why. A library is compiled once per machine
(about a second) into ``$NITIHW_CACHE_DIR`` if set, else ``golden/__pycache__``, else (a
read-only package folder) ``~/.cache/nitihw``, under a name that hashes the source (and the
headers it includes), the compiler and the flags; it is written to a temporary name and
renamed, so that processes starting at once never load a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nitihw.golden.errors import UserError
from nitihw.golden.parallel import MIN_MACS, Workers

#: longest K for which ``K * 128 * 128 < 2^31``: every int8 sum fits int32
MAX_K = (2**31 - 1) // (128 * 128)
#: below this many multiply-adds the float BLAS route costs as little (both are mostly call
#: overhead): measured 27 us against 33 us at 2^19 (64 x 64 x 128), 37 against 78 at 2^21
MIN_INT8_MACS = 1 << 18


@dataclass(frozen=True)
class Kernel:
    """One compiled int8 GEMM: its source, the CPU it needs and the shape of its packed B.

    ``lanes``: columns of B a vector holds (a panel is ``lanes * nv`` columns wide); ``group``:
    the K rows one instruction sums per column (B is packed ``group`` rows at a time, each
    column's ``group`` values in ``group_bytes`` bytes); ``macs``: the multiply-adds a cycle the
    planner counts on; ``cpu``: the flags of ``/proc/cpuinfo`` it needs (x86's ``flags``, ARM's
    ``Features``)."""

    name: str
    source: str
    arch: str  # platform.machine() family: "x86_64" or "aarch64"
    flags: tuple
    cpu: tuple
    lanes: int
    group: int
    group_bytes: int
    macs: int
    tuned: bool = False  # plans chosen by timing them (see matmul_range), not by the cost model


_SHARED = ("-O3", "-fPIC", "-shared")
#: every kernel, best first within each architecture
KERNELS = {
    k.name: k
    for k in (
        Kernel(
            "avx512vnni",
            "int8_gemm.c",
            "x86_64",
            ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"),
            ("avx512_vnni", "avx512bw"),
            16,
            4,
            4,
            64,
        ),
        Kernel("avx2", "int8_gemm_avx2.c", "x86_64", ("-mavx2",), ("avx2",), 8, 2, 4, 16, True),
        Kernel(
            "i8mm",
            "int8_gemm_i8mm.c",
            "aarch64",
            ("-march=armv8.2-a+i8mm",),
            ("i8mm",),
            2,
            8,
            8,
            64,
            True,
        ),
        Kernel(
            "neon",
            "int8_gemm_neon.c",
            "aarch64",
            ("-march=armv8.2-a+dotprod",),
            ("asimddp",),
            4,
            4,
            4,
            32,
            True,
        ),
    )
}
#: ``NITIHW_KERNELS``: ``auto`` / unset (the best int8 kernel this CPU has), a kernel's name
#: (that one, where this CPU has it: ``avx2`` on an AVX-512 machine tests the AVX2 path),
#: ``blas`` (no int8 kernel: the float BLAS routes, as on a CPU without any), or ``numpy``
#: (``blas``, and no Numba kernels either, :mod:`nitihw.golden.kernels`)
CHOICES = ("auto", "blas", "numpy", *KERNELS)


@dataclass
class _Loaded:
    kernel: Kernel
    lib: ctypes.CDLL
    rows: dict  # nv -> rows of A per block (the library's own rows_for)


_libs: dict[str, _Loaded | None] = {}  # kernel name -> the loaded library, or None
_whys: dict[str, str] = {}  # kernel name -> why it is not available
_chosen: list = []  # [the kernel in use (None: none), why], once chosen
_off = 0  # turned_off() depth
_forced: list[str] = []  # forced() stack


def machine() -> str:
    """This machine's architecture family: ``x86_64`` or ``aarch64`` (else as reported)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``), or None off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None  # not Linux: let the library's own CPU check answer
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return set(line.split(":", 1)[1].split())
    return set()


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("NITIHW_CACHE_DIR"):
        dirs.append(Path(os.environ["NITIHW_CACHE_DIR"]))
    dirs.append(Path(__file__).with_name("__pycache__"))
    dirs.append(Path.home() / ".cache" / "nitihw")
    return dirs


def _build(cc: str, kernel: Kernel) -> Path:
    """The compiled library's path (compiled now unless a cached one matches)."""
    source = Path(__file__).with_name(kernel.source)
    flags = (*_SHARED[:1], *kernel.flags, *_SHARED[1:])
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    text = source.read_bytes()
    for header in sorted(source.parent.glob("int8_*.h")):  # what the kernels #include
        if f'#include "{header.name}"'.encode() in text:
            text += header.read_bytes()
    key = hashlib.sha256(text + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
    name = f"{source.stem}-{key}.so"
    errors = []
    for folder in _cache_dirs():
        target = folder / name
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=folder)
            os.close(fd)
        except OSError as e:
            errors.append(f"{folder}: {e}")
            continue
        try:
            done = subprocess.run(
                [cc, *flags, "-o", tmp, str(source)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed on {source.name}: {done.stderr.strip()[-500:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
    raise RuntimeError("no writable cache folder: " + "; ".join(errors))


def _load_kernel(name: str) -> _Loaded | None:
    """The kernel ``name`` built and loaded, or None (:func:`kernel_status` says why)."""
    if name in _libs:
        return _libs[name]
    kernel, loaded, why = KERNELS[name], None, ""
    flags = _cpu_flags()
    if kernel.arch != machine():
        why = f"it is for {kernel.arch} CPUs, this one is {machine()}"
    elif flags is not None and not set(kernel.cpu) <= flags:
        why = f"this CPU has no {' / '.join(sorted(set(kernel.cpu) - flags))}"
    elif (cc := _compiler()) is None:
        why = "no C compiler found ($CC, cc, gcc)"
    else:
        try:
            lib = ctypes.CDLL(str(_build(cc, kernel)))
        except (OSError, RuntimeError) as e:
            why = f"could not build it: {e}"
        else:
            _declare(lib)
            rows = {nv: lib.nitihw_int8_rows(nv) for nv in (1, 2, 3, 4)}
            if not lib.nitihw_int8_supported():
                why = f"this CPU cannot run it (its {name} check failed)"
            else:
                loaded = _Loaded(kernel, lib, {nv: r for nv, r in rows.items() if r > 0})
    _libs[name], _whys[name] = loaded, why or "available"
    return loaded


def kernel_status(name: str) -> str:
    """``"available"`` when the kernel ``name`` runs here, else why not."""
    _load_kernel(name)
    return _whys[name]


def _choose() -> tuple[str | None, str]:
    """The kernel ``NITIHW_KERNELS`` asks for on this machine, and why it is (not) in use."""
    want = os.environ.get("NITIHW_KERNELS", "").strip().lower() or "auto"
    if want not in CHOICES:
        raise UserError(
            f"NITIHW_KERNELS={want!r}: choose from {', '.join(CHOICES)} (auto: the best "
            "kernel this CPU has)"
        )
    if want in ("numpy", "blas"):
        return None, f"turned off (NITIHW_KERNELS={want})"
    if want != "auto":
        if _load_kernel(want) is None:
            return None, f"NITIHW_KERNELS={want}: {_whys[want]}"
        return want, "in use"
    tried = []
    for name, kernel in KERNELS.items():
        if kernel.arch != machine():
            continue
        if _load_kernel(name) is not None:
            return name, "in use"
        tried.append(f"{name}: {_whys[name]}")
    return None, "; ".join(tried) or f"no int8 kernel for {machine()} CPUs"


def _load() -> _Loaded | None:
    """The kernel in use (the forced one inside :func:`forced`), or None."""
    if _forced:
        return _libs[_forced[-1]]
    if not _chosen:
        _chosen.extend(_choose())
    return _libs[_chosen[0]] if _chosen[0] else None


def _declare(lib) -> None:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.nitihw_int8_supported.argtypes = []
    lib.nitihw_int8_supported.restype = cint
    lib.nitihw_int8_rows.argtypes = [cint]
    lib.nitihw_int8_rows.restype = cint
    lib.nitihw_int8_pack_b.argtypes = [i64, i64, cint, ptr, i64, i64, ptr, ptr]
    lib.nitihw_int8_pack_b.restype = None
    lib.nitihw_int8_gemm.argtypes = [i64, i64, i64, cint, ptr, i64, i64, ptr, ptr, ptr, i64, i64]
    lib.nitihw_int8_gemm.argtypes += [ptr]
    lib.nitihw_int8_gemm.restype = cint
    lib.nitihw_int8_conv_error.argtypes = [i64] * 7 + [ptr, cint, ptr, ptr, i64, ptr, ptr]
    lib.nitihw_int8_conv_error.restype = cint


def available() -> bool:
    """Whether an int8 GEMM is in use on this machine (and not :func:`turned_off`)."""
    return not _off and _load() is not None


def kernel() -> str | None:
    """The name of the kernel in use (None: none, or :func:`turned_off`)."""
    loaded = None if _off else _load()
    return loaded.kernel.name if loaded else None


@contextlib.contextmanager
def turned_off():
    """The golden model without the int8 GEMM while the block runs (the float BLAS routes: the
    same integers). For comparisons; not thread-safe against runs started meanwhile."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


@contextlib.contextmanager
def forced(name: str):
    """The kernel ``name`` in use while the block runs, whatever this CPU's best (for tests
    and benchmarks: ``NITIHW_KERNELS`` does it for a whole process); ``ValueError`` when it
    cannot run here. Not thread-safe against runs started meanwhile."""
    if name not in KERNELS:
        raise ValueError(f"unknown int8 kernel {name!r}; choose from {', '.join(KERNELS)}")
    if _load_kernel(name) is None:
        raise ValueError(f"the {name} int8 kernel cannot run here: {_whys[name]}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def status() -> str:
    """``"in use"``, or why not."""
    loaded = _load()
    if _off and loaded:
        return "turned off (turned_off())"
    return "in use" if _forced else _chosen[1]


def takes(a_dtype, b_dtype, k: int) -> bool:
    """Whether a product of operands of these dtypes over ``k`` terms can take the int8 route:
    int8 operands, ``k <= MAX_K``, the library in use."""
    return a_dtype == b_dtype == np.int8 and k <= MAX_K and available()


def applies(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the GEMM ``a @ b`` can take the int8 route (:func:`takes`)."""
    return (
        a.ndim == 2
        and b.ndim == 2
        and a.shape[1] == b.shape[0]
        and takes(a.dtype, b.dtype, a.shape[1])
    )


def _strides(x: np.ndarray) -> tuple[int, int]:
    return x.strides[0] // x.itemsize, x.strides[1] // x.itemsize


def _plan(m: int, k: int, n: int, sa: tuple, sb: tuple) -> tuple[float, int]:
    """``(cost, nv)`` of ``A (M x K, strides sa) @ B (K x N, strides sb)`` at its best panel
    width ``nv`` on the kernel in use, the cost in rough cycles: padded multiply-adds at the
    kernel's rate, packing (a quarter cycle a byte where rows or columns are contiguous, else
    two cycles a byte, one at a time)."""
    loaded = _load()
    kern = loaded.kernel
    kg = -(-k // kern.group) * kern.group
    pack_a = m * k * (0.25 if 1 in sa else 2.0)
    pack_b = k * n * (0.25 if sb[1] == 1 else 2.0)
    best = None
    for nv, mr in sorted(loaded.rows.items(), reverse=True):
        nr = kern.lanes * nv
        work = -(-n // nr) * nr * -(-m // mr) * mr * kg
        cost = work / kern.macs + pack_a + pack_b
        if best is None or cost < best[0]:
            best = (cost, nv)
    return best


def _packed(b: np.ndarray, nv: int) -> tuple:
    """``(packed, corr)``: ``b`` (K x N) in the kernel's panels of ``lanes * nv`` columns, and
    its column sums times 128 (the VNNI kernel's offset correction; zeros for the others)."""
    loaded = _load()
    kern = loaded.kernel
    k, n = b.shape
    kg, nr = -(-k // kern.group), kern.lanes * nv
    panels = -(-n // nr)
    packed = np.empty(panels * kg * nr * kern.group_bytes, np.int8)
    corr = np.empty(panels * nr, np.int32)
    sbk, sbn = _strides(b)
    loaded.lib.nitihw_int8_pack_b(
        k, n, nv, b.ctypes.data, sbk, sbn, packed.ctypes.data, corr.ctypes.data
    )
    return packed, corr


def conv_error_range(err, weight, pad: int, workers: Workers | None = None, block_bytes=1 << 19):
    """The backward error of a stride-1 convolution, ``(out, min, max)``: NHWC int8 ``err``
    (B, Ho, Wo, C_out) and int8 weights (C_out, k, k, C_in) give the int32 sums (B*H*W, C_in)
    of the full convolution with the flipped kernel. One GEMM of the error with every kernel
    tap (K = C_out) a few images at a time (their products, ``block_bytes`` at most, stay in
    cache), then each input position's sum of the taps landing on it; the images are split
    over ``workers``. Needs int8 operands, the library, and ``C_out <= MAX_K``; the caller
    makes sure the sums fit int32."""
    b, ho, wo, cout = err.shape
    _, k, _, cin = weight.shape
    rows = np.ascontiguousarray(err).reshape(-1, cout)
    taps = np.ascontiguousarray(weight).reshape(cout, k * k * cin)
    if not applies(rows, taps):
        raise ValueError(
            f"the int8 conv error needs int8 operands, C_out <= {MAX_K} and the library "
            f"({status()}); got {err.dtype} {err.shape} and {weight.dtype} {weight.shape}"
        )
    h, w = ho - 2 * pad + k - 1, wo - 2 * pad + k - 1
    out = np.empty((b * h * w, cin), np.int32)
    if out.size == 0 or cout == 0:
        out[...] = 0
        return out, 0, 0
    loaded = _load()
    if loaded.kernel.tuned:  # each panel width timed on the first call of this shape
        key = ("conv_error", loaded.kernel.name, err.shape, weight.shape, pad, block_bytes)
        if key not in _tuned:
            return _fastest(
                key,
                sorted(loaded.rows),
                lambda nv: _conv_error(
                    rows, taps, out, err.shape, k, cin, pad, nv, None, block_bytes
                ),
            )
        nv = _tuned[key]
    else:
        nv = _plan(b * ho * wo, cout, k * k * cin, (cout, 1), (k * k * cin, 1))[1]
    return _conv_error(rows, taps, out, err.shape, k, cin, pad, nv, workers, block_bytes)


def _conv_error(rows, taps, out, shape, k, cin, pad, nv, workers, block_bytes):
    """:func:`conv_error_range` at panel width ``nv``."""
    b, ho, wo, cout = shape
    h, w = ho - 2 * pad + k - 1, wo - 2 * pad + k - 1
    packed, corr = _packed(taps, nv)
    lib = _load().lib
    block = max(1, block_bytes // (4 * ho * wo * k * k * cin))

    def images(lo, hi):
        mm = np.empty(2, np.int32)
        rc = lib.nitihw_int8_conv_error(
            hi - lo, ho, wo, cout, k, cin, pad, rows[lo * ho * wo :].ctypes.data, nv,
            packed.ctypes.data, corr.ctypes.data, block, out[lo * h * w :].ctypes.data,
            mm.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError("the int8 conv error could not allocate its products")
        return int(mm[0]), int(mm[1])

    if workers is None:
        lo, hi = images(0, b)
        return out, lo, hi
    per_image = ho * wo * cout * k * k * cin
    parts = workers.run(images, workers.spans(b, max(1, MIN_MACS // per_image)))
    return out, min(p[0] for p in parts), max(p[1] for p in parts)


def matmul_range(
    a: np.ndarray, b: np.ndarray, workers: Workers | None = None, plan: tuple | None = None
) -> tuple:
    """``(a @ b, min, max)`` exactly, as int32 (C order); :func:`applies` must hold. Large
    products are split in row blocks over ``workers``. ``plan`` forces ``(flipped, nv)``
    (the tests reach every kernel that way); by default the cheapest is chosen."""
    if not applies(a, b):
        raise ValueError(
            f"the int8 GEMM needs int8 operands with K <= {MAX_K} and the library "
            f"({status()}); got {a.dtype} {a.shape} @ {b.dtype} {b.shape}"
        )
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), np.int32)
    if m == 0 or n == 0:
        return out, 0, 0
    if k == 0:
        out[...] = 0
        return out, 0, 0
    loaded = _load()
    if plan is None and loaded.kernel.tuned and m * k * n >= MIN_TUNE_MACS:
        key = (loaded.kernel.name, m, k, n, _strides(a), _strides(b))
        plan = _tuned.get(key)
        if plan is None:
            every = [(flip, nv) for flip in (False, True) for nv in sorted(loaded.rows)]
            return _fastest(key, every, lambda plan: _run(a, b, out, *plan, None))
    if plan is None:  # C = A @ B, or C^T = B^T @ A^T into C's columns: the cheaper
        direct = _plan(m, k, n, _strides(a), _strides(b))
        flipped = _plan(n, k, m, _strides(b)[::-1], _strides(a)[::-1])
        stores = m * n * 0.25  # a row store; a column store costs twice that
        flip = flipped[0] + 2 * stores < direct[0] + stores
        nv = flipped[1] if flip else direct[1]
    else:
        flip, nv = plan
    return _run(a, b, out, flip, nv, workers)


#: the kernels marked ``tuned`` choose the plan of a GEMM this large (multiply-adds) by timing
#: every plan on its first call (the results are the same integers whichever runs): their
#: speeds depend on the CPU more than a cost model can say
MIN_TUNE_MACS = 1 << 20
#: turns each plan gets when the plans of a shape are timed (:func:`_fastest`)
TUNE_ROUNDS = 3
_tuned: dict = {}  # (kernel, M, K, N, strides of A, strides of B) -> (flipped, nv)


def _fastest(key: tuple, plans: list, run, rounds: int = TUNE_ROUNDS):
    """Run ``run(plan)`` ``rounds`` times for every plan (single-threaded, the plans taking
    turns), remember the plan of the fastest run for ``key`` and return the last result (the
    same integers whichever plan made it). One timing each picked a plan 1.5x slower than the
    best on a busy machine; the fastest of three turns is steady."""
    best = None
    for _ in range(rounds):
        for plan in plans:
            t0 = time.perf_counter()
            done = run(plan)
            took = time.perf_counter() - t0
            if best is None or took < best[0]:
                best = (took, plan)
    _tuned[key] = best[1]
    return done


def _run(a, b, out, flip: bool, nv: int, workers):
    """``a @ b`` into ``out`` with the plan ``(flip, nv)``; returns ``(out, min, max)``."""
    m, k = a.shape
    n = b.shape[1]
    if flip:
        a, b, (m, n), (scm, scn) = b.T, a.T, (n, m), (1, n)
    else:
        scm, scn = n, 1
    loaded = _load()
    lib = loaded.lib
    packed, corr = _packed(b, nv)
    sam, sak = _strides(a)
    base = out.ctypes.data

    def rows(lo, hi):
        mm = np.empty(2, np.int32)
        rc = lib.nitihw_int8_gemm(
            hi - lo, n, k, nv, a[lo:].ctypes.data, sam, sak, packed.ctypes.data,
            corr.ctypes.data, base + 4 * lo * scm, scm, scn, mm.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError("the int8 GEMM could not allocate its row block")
        return int(mm[0]), int(mm[1])

    mr = loaded.rows[nv]
    blocks = -(-m // mr)  # split on whole row blocks of the kernel: no extra padded rows
    least = max(1, MIN_MACS // max(mr * k * n, 1))
    if workers is None or m * k * n < MIN_MACS:
        lo, hi = rows(0, m)
        return out, lo, hi
    spans = [(lo * mr, min(hi * mr, m)) for lo, hi in workers.spans(blocks, least)]
    parts = workers.run(rows, spans)
    return out, min(p[0] for p in parts), max(p[1] for p in parts)
