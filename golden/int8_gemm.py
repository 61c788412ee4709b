"""The golden model's int8 GEMM: AVX-512 VNNI, compiled on first use (``int8_gemm.c``).

An int8 x int8 product sum is an integer, and ``vpdpbusd`` computes 64 multiply-adds of bytes
into int32 lanes per instruction, four times the float32 FMA's 16: the integer model's own
arithmetic is the fast one, where float32 BLAS (the other exact route, golden/gemm.py) spends
four bytes on every operand and a quarter of the lanes. Measured on LeNet's GEMMs, 2.5-3.5x
faster than single-threaded float32 BLAS (docs/golden_speed.md).

When it applies: both operands are int8 arrays and ``K < 2^17``, so that every sum lies within
``K * 128 * 128 < 2^31`` and the int32 result is exact without searching the operands for their
magnitudes. The kernel works modulo 2^32 (the +128 offset of the unsigned operand wraps on the
way), which gives the exact sum whenever that sum fits int32.

Where it is not available, the golden model uses the float BLAS routes instead: same
integers. It is not available when the CPU lacks AVX-512 VNNI (``avx512_vnni`` in
``/proc/cpuinfo``), when no C compiler is found (``$CC``, else ``cc``, ``gcc``), when the
compilation fails, or with ``NITIHW_KERNELS=numpy``. :func:`status` says which. The library
is compiled once per machine (about a second) into ``$NITIHW_CACHE_DIR`` if set, else
``golden/__pycache__``, else (a read-only package folder) ``~/.cache/nitihw``, under a name
that hashes the source, the compiler and the flags; it is written to a temporary name and
renamed, so that processes starting at once never load a half-written file.

The layout (``int8_gemm.c``): ``B`` is packed once per GEMM into panels of ``16 * nv`` columns;
the calling thread then runs the rows, or hands row blocks to the golden model's workers (the
call releases the GIL), each block packing its own rows of ``A``. The result's min and max are
taken as it is stored. ``tests/test_int8_gemm.py`` compares every layout and padding case with
NumPy's int64 matmul.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nitihw.golden.parallel import MIN_MACS, Workers

SOURCE = Path(__file__).with_name("int8_gemm.c")
FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-fPIC", "-shared")
#: longest K for which ``K * 128 * 128 < 2^31``: every int8 sum fits int32
MAX_K = (2**31 - 1) // (128 * 128)
#: below this many multiply-adds the float BLAS route costs as little (both are mostly call
#: overhead): measured 27 us against 33 us at 2^19 (64 x 64 x 128), 37 against 78 at 2^21
MIN_INT8_MACS = 1 << 18
#: rows of A per kernel block for each panel width nv (int8_gemm.c's rows_for)
ROWS = {1: 16, 2: 12, 3: 8, 4: 6}

_lib = None
_why = ""
_off = 0  # turned_off() depth


def _cpu_has_vnni() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: let the library's own CPU check answer
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return "avx512_vnni" in flags.split()  # the kernel's name for avx512vnni


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


def _build(cc: str) -> Path:
    """The compiled library's path (compiled now unless a cached one matches)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode()
    ).hexdigest()[:16]
    name = f"int8_gemm-{key}.so"
    errors = []
    for folder in _cache_dirs():
        target = folder / name
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".int8_gemm-", suffix=".so", dir=folder)
            os.close(fd)
        except OSError as e:
            errors.append(f"{folder}: {e}")
            continue
        try:
            done = subprocess.run(
                [cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed on {SOURCE.name}: {done.stderr.strip()[-500:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
    raise RuntimeError("no writable cache folder: " + "; ".join(errors))


def _load():
    global _lib, _why
    if _lib is not None:
        return _lib or None
    _lib = False
    if os.environ.get("NITIHW_KERNELS", "").lower() == "numpy":
        _why = "turned off (NITIHW_KERNELS=numpy)"
    elif not _cpu_has_vnni():
        _why = "this CPU has no AVX-512 VNNI"
    elif (cc := _compiler()) is None:
        _why = "no C compiler found ($CC, cc, gcc)"
    else:
        try:
            lib = ctypes.CDLL(str(_build(cc)))
        except (OSError, RuntimeError) as e:
            _why = f"could not build it: {e}"
        else:
            _declare(lib)
            if not lib.nitihw_int8_supported():
                _why = "this CPU has no AVX-512 VNNI"
            elif any(lib.nitihw_int8_rows(nv) != mr for nv, mr in ROWS.items()):
                _why = "int8_gemm.c and int8_gemm.py disagree on the kernels' rows"
            else:
                _lib, _why = lib, "in use"
    return _lib or None


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
    """Whether the int8 GEMM is in use on this machine (and not :func:`turned_off`)."""
    return not _off and _load() is not None


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


def status() -> str:
    """``"in use"``, or why not."""
    _load()
    return "turned off (turned_off())" if _off and _lib else _why


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
    width ``nv``, the cost in rough cycles: padded multiply-adds at 64 a cycle, packing (a
    quarter cycle a byte where rows or columns are contiguous, else two cycles a byte, one at a
    time)."""
    k4 = -(-k // 4) * 4
    pack_a = m * k * (0.25 if 1 in sa else 2.0)
    pack_b = k * n * (0.25 if sb[1] == 1 else 2.0)
    best = None
    for nv in (4, 3, 2, 1):
        mr = ROWS[nv]
        work = -(-n // (16 * nv)) * 16 * nv * -(-m // mr) * mr * k4
        cost = work / 64 + pack_a + pack_b
        if best is None or cost < best[0]:
            best = (cost, nv)
    return best


def _packed(b: np.ndarray, nv: int) -> tuple:
    """``(packed, corr)``: ``b`` (K x N) in panels of ``16 * nv`` columns, and its column sums
    times 128."""
    k, n = b.shape
    k4, nr = -(-k // 4), 16 * nv
    panels = -(-n // nr)
    packed = np.empty(panels * k4 * nr * 4, np.int8)
    corr = np.empty(panels * nr, np.int32)
    sbk, sbn = _strides(b)
    _load().nitihw_int8_pack_b(
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
    nv = _plan(b * ho * wo, cout, k * k * cin, (cout, 1), (k * k * cin, 1))[1]
    packed, corr = _packed(taps, nv)
    lib = _load()
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
    lib = _load()
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
    if plan is None:  # C = A @ B, or C^T = B^T @ A^T into C's columns: the cheaper
        direct = _plan(m, k, n, _strides(a), _strides(b))
        flipped = _plan(n, k, m, _strides(b)[::-1], _strides(a)[::-1])
        stores = m * n * 0.25  # a row store; a column store costs twice that
        flip = flipped[0] + 2 * stores < direct[0] + stores
        nv = flipped[1] if flip else direct[1]
    else:
        flip, nv = plan
    if flip:
        a, b, (m, n), (scm, scn) = b.T, a.T, (n, m), (1, n)
    else:
        scm, scn = n, 1
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

    mr = ROWS[nv]
    blocks = -(-m // mr)  # split on whole row blocks of the kernel: no extra padded rows
    least = max(1, MIN_MACS // max(mr * k * n, 1))
    if workers is None or m * k * n < MIN_MACS:
        lo, hi = rows(0, m)
        return out, lo, hi
    spans = [(lo * mr, min(hi * mr, m)) for lo, hi in workers.spans(blocks, least)]
    parts = workers.run(rows, spans)
    return out, min(p[0] for p in parts), max(p[1] for p in parts)
