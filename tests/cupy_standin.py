"""A CPU stand-in for CuPy: nitihw's GPU backend and its CUDA kernel sources, run without a GPU.

The GPU backend (``nitihw.gpu``) can only be *verified* on a GPU. This stand-in lets everything
in it that is not CUDA itself run in CI, so that a GPU session finds the code already right:

- **Kernels.** The CUDA C++ bodies of :mod:`nitihw.gpu.kernels` are compiled by the host C++
  compiler inside the loop CuPy generates for them (``typedef`` for the type parameter ``T``,
  ``const T &x = _raw_x[i]`` for array inputs, scalars by value) and run element by element.
  CuPy's rule for typed parameters is kept: an array whose dtype differs raises ``TypeError``.
- **Arrays.** :class:`DeviceArray` wraps a NumPy array and, as ``cupy.ndarray`` does, refuses to
  be turned into a NumPy array implicitly or mixed with NumPy arrays in arithmetic, and returns
  0-d arrays from reductions. A host round trip hidden in the backend fails here as on a GPU.
- **cuBLAS.** ``cublas.gemmEx`` is done in column-major order on the raw pointers, with the
  int8 restrictions (``CUDA_R_8I`` inputs, ``CUDA_R_32I`` output, the "TN" layout in which
  both operands are contiguous along K as int8 tensor cores read them, alpha and beta 0 or 1,
  32-bit aligned operands, ``lda``/``ldb`` multiples of 4), and refuses a result that would not
  fit int32.
- **Traffic.** :data:`traffic` counts the bytes that cross each way and the scalar reads (each
  a synchronisation on a GPU), so tests can check that a training step stays on the device,
  and the kernels launched (approximately as CuPy would: every elementwise operation,
  reduction, copy, fill and kernel of ours; views, reshapes and ``empty`` launch nothing),
  the cost that bounds a small network's step.

Not checked here, only on a GPU: NVRTC's compilation, the real cuBLAS kernels, CuPy's own type
promotion in corner cases, and speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

CXX = shutil.which("g++") or shutil.which("c++")

#: C type of each dtype, as CuPy names them in generated code
CTYPES = {
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int16): "short",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int64): "long long",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.bool_): "bool",
}
#: ctypes type of each dtype, for scalars and raw memory
_CT = {
    np.dtype(np.int8): ctypes.c_int8,
    np.dtype(np.uint8): ctypes.c_uint8,
    np.dtype(np.int16): ctypes.c_int16,
    np.dtype(np.uint16): ctypes.c_uint16,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.bool_): ctypes.c_bool,
}


# ---- arrays -----------------------------------------------------------------------------------
class Traffic:
    """What crossed between host and "device" since :meth:`reset`: bytes each way, and the
    scalar reads (``int(x)``, ``bool(x)``: each one a synchronisation on a real GPU)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.to_device_bytes = self.to_host_bytes = self.syncs = self.launches = 0

    def launch(self, n: int = 1):
        """A kernel launched (a CuPy operation that computes or copies on the device)."""
        self.launches += n

    def up(self, x):
        if isinstance(x, np.ndarray):
            self.to_device_bytes += x.nbytes

    def down(self, x: np.ndarray, sync: bool = False):
        self.to_host_bytes += x.nbytes
        self.syncs += sync


#: the counters of the installed stand-in
traffic = Traffic()


def _host_arrays(x):
    """The NumPy arrays inside an index or value (CuPy copies them to the device)."""
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _host_arrays(v)


class _Pointer:
    def __init__(self, a: np.ndarray):
        self.ptr = a.ctypes.data


class DeviceArray:
    """A "device" array: a NumPy array that behaves, at its borders, like ``cupy.ndarray``."""

    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, a: np.ndarray):
        self._a = a

    # host transfers must be explicit, as in CuPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self):
        traffic.down(self._a)
        return self._a.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        traffic.launch()
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in _VIEWS:
            traffic.launch()
        return _call(func, args, kwargs)

    # metadata
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: DeviceArray(self._a.T))
    data = property(lambda self: _Pointer(self._a))

    def __getattr__(self, name):  # methods (astype, reshape, sum, argmax, ...) and flags
        if name.startswith("__"):  # e.g. __array_interface__: no back door to the host data
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):

            def method(*args, **kwargs):
                if name not in _VIEWS and not (
                    name == "astype" and np.dtype(args[0]) == self._a.dtype
                    and kwargs.get("copy", True) is False
                ):  # fmt: skip
                    traffic.launch()
                return _call(attr, args, kwargs)

            return method
        return _wrap(attr)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x) for x in self._a)

    # a device-to-host sync of one element, as CuPy allows
    def __int__(self):
        traffic.down(self._a, sync=True)
        return int(self._a)

    def __float__(self):
        traffic.down(self._a, sync=True)
        return float(self._a)

    def __bool__(self):
        traffic.down(self._a, sync=True)
        return bool(self._a)

    def __getitem__(self, index):
        for h in _host_arrays(index):
            traffic.up(h)
        out = self._a[_unwrap(index, host_ok=True)]
        if not np.shares_memory(out, self._a):  # advanced indexing: a gather kernel
            traffic.launch()
        return _wrap(out)

    def __setitem__(self, index, value):
        for h in _host_arrays((index, value)):
            traffic.up(h)
        traffic.launch()
        self._a[_unwrap(index, host_ok=True)] = _unwrap(value, host_ok=True)

    def __repr__(self):
        return f"standin.{self._a!r}"


def _binary(op):
    def forward(self, other):
        if op is not operator.matmul:  # a matmul launches its own GEMM (not counted apart)
            traffic.launch()
        return _call(op, (self, other), {})

    def reflected(self, other):
        traffic.launch()
        return _call(op, (other, self), {})

    return forward, reflected


#: NumPy functions and methods that CuPy does without a kernel (views and metadata)
_VIEWS = {
    "reshape", "view", "transpose", "swapaxes", "squeeze", "expand_dims", "broadcast_to",
    "shape", "ndim", "size", "result_type", "may_share_memory", "shares_memory", "ravel",
    "as_strided", "empty", "empty_like", "get", "item", "tolist", "__array_namespace__",
}  # fmt: skip

for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": operator.floordiv,
    "truediv": operator.truediv, "mod": operator.mod, "pow": operator.pow,
    "lshift": operator.lshift, "rshift": operator.rshift, "and": operator.and_,
    "or": operator.or_, "xor": operator.xor, "matmul": operator.matmul,
}.items():  # fmt: skip
    _f, _r = _binary(_op)
    setattr(DeviceArray, f"__{_name}__", _f)
    setattr(DeviceArray, f"__r{_name}__", _r)
    setattr(
        DeviceArray,
        f"__i{_name}__",
        (lambda op: lambda self, other: _inplace(self, op, other))(getattr(operator, f"i{_name}")),
    )
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(DeviceArray, f"__{_name}__", _binary(getattr(operator, _name))[0])
for _name in ("neg", "pos", "abs", "invert"):
    setattr(
        DeviceArray,
        f"__{_name}__",
        (lambda op: lambda self: _call(op, (self,), {}))(getattr(operator, _name)),
    )


def _inplace(self, op, other):
    traffic.launch()
    op(self._a, _unwrap(other))
    return self


def _unwrap(x, host_ok: bool = False):
    """Device arrays to their NumPy data; a NumPy array where CuPy would refuse one is an error."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, np.ndarray):
        if not host_ok:
            raise TypeError(
                "Unsupported type <class 'numpy.ndarray'>: a host array was mixed with device "
                "arrays (CuPy refuses this; move it with cupy.asarray first)"
            )
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, host_ok) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, host_ok) for k, v in x.items()}
    return x


def _wrap(x):
    """NumPy results back to the device; NumPy scalars become 0-d arrays, as CuPy returns them."""
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _call(func, args, kwargs):
    return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


# ---- kernels ----------------------------------------------------------------------------------
@functools.cache
def _build_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="nitihw-cupy-standin-"))


@functools.cache
def _compile(source: str):
    """Build ``source`` into a shared library (once per source text) and load it."""
    if CXX is None:
        raise RuntimeError("the CuPy stand-in needs a C++ compiler (g++) to build the kernels")
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    src = _build_dir() / f"k{key}.cpp"
    lib = src.with_suffix(".so")
    src.write_text(source)
    flags = ["-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Werror"]
    if os.environ.get("NITIHW_STANDIN_UBSAN"):  # undefined behaviour aborts the process
        flags += ["-fsanitize=undefined", "-fno-sanitize-recover=all"]
    cmd = [CXX, *flags, "-o", str(lib), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"kernel source does not compile:\n{source}\n{done.stderr}")
    return ctypes.CDLL(str(lib))


class _Param:
    def __init__(self, text: str):
        words = text.split()
        self.raw = words[:1] == ["raw"]  # indexed by the kernel itself: x[flat C-order index]
        if self.raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"stand-in kernels take '[raw] type name' parameters, got {text!r}")
        t, self.name = words
        self.generic = len(t) == 1  # a type placeholder such as T
        self.type = t if self.generic else np.dtype(t)


def _params(text: str) -> list[_Param]:
    return [_Param(p) for p in text.split(",") if p.strip()]


# the host build gets max/min from the standard library; CUDA device code has its own
_PRELUDE = "#include <algorithm>\nusing std::max;\nusing std::min;\n#define __device__\n"
_GLOBAL = "__global__ "
_HOST_LOOP = "for (long long i = 0; i < _n; ++i)"
_CUDA_LOOP = (
    "for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < _n;"
    " i += (long long)blockDim.x * gridDim.x)"
)


class _Kernel:
    """What ElementwiseKernel and ReductionKernel share: CuPy's argument and type rules."""

    def __init__(self, in_params: str, out_params: str, name: str):
        self.ins, self.outs, self.name = _params(in_params), _params(out_params), name

    def _bind(self, args):
        if len(args) != len(self.ins):
            raise TypeError(f"{self.name}: {len(self.ins)} arguments expected, got {len(args)}")
        typemap: dict[str, np.dtype] = {}
        values = []
        for p, a in zip(self.ins, args, strict=True):
            if isinstance(a, np.ndarray):
                raise TypeError(f"{self.name}: Unsupported type <class 'numpy.ndarray'> ({p.name})")
            if isinstance(a, DeviceArray):
                a = a._a
                if not p.generic and a.dtype != p.type:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.type}")
                if p.generic and typemap.setdefault(p.type, a.dtype) != a.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {typemap[p.type]}")
            values.append(a)
        return typemap, values

    @staticmethod
    def _ctype(p: _Param) -> str:
        """C type of a parameter: a placeholder such as ``T`` stays (a typedef binds it)."""
        return p.type if p.generic else CTYPES[p.type]

    @staticmethod
    def _dtype(p: _Param, typemap) -> np.dtype:
        return typemap[p.type] if p.generic else p.type

    def _typedefs(self, typemap) -> str:
        return "".join(f"typedef {CTYPES[d]} {t};\n" for t, d in sorted(typemap.items()))


class ElementwiseKernel(_Kernel):
    """``cupy.ElementwiseKernel`` on the CPU: the same body, in the same loop, built by g++."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **kwargs):
        super().__init__(in_params, out_params, name)
        self.operation, self.preamble = operation, preamble

    def source(self, typemap, array_params, cuda: bool = False, name: str | None = None) -> str:
        """The kernel as C++ for the host compiler or, with ``cuda``, as a CUDA kernel."""
        sig = ["long long _n"]
        loads = []
        for p in self.ins:
            ct = self._ctype(p)
            if p.raw:  # CuPy's raw CArray, indexed with a flat C-order index
                sig.append(f"const {ct} *{p.name}")
            elif p.name in array_params:
                sig.append(f"const {ct} *_raw_{p.name}")
                loads.append(f"const {ct} &{p.name} = _raw_{p.name}[i];")
            else:
                sig.append(f"{ct} {p.name}")
        for p in self.outs:
            ct = self._ctype(p)
            if p.raw:  # written by the kernel itself at the indices it chooses
                sig.append(f"{ct} *{p.name}")
                continue
            sig.append(f"{ct} *_raw_{p.name}")
            loads.append(f"{ct} &{p.name} = _raw_{p.name}[i];")
        return (
            f"{'' if cuda else _PRELUDE}{self._typedefs(typemap)}{self.preamble}\n"
            f'extern "C" {_GLOBAL if cuda else ""}void {name or self.name}({", ".join(sig)}) {{\n'
            f"  {_CUDA_LOOP if cuda else _HOST_LOOP} {{\n    {' '.join(loads)}\n"
            f"    {self.operation}\n  }}\n}}\n"
        )

    def __call__(self, *args, size=None):
        given = args[len(self.ins) :]  # outputs passed in, as CuPy allows
        if given and len(given) != len(self.outs):
            raise TypeError(f"{self.name}: pass all {len(self.outs)} outputs or none")
        if any(p.raw for p in self.outs) and not given:
            raise TypeError(f"{self.name}: a raw output must be passed in")
        typemap, values = self._bind(args[: len(self.ins)])
        arrays = [v for p, v in zip(self.ins, values, strict=True)
                  if isinstance(v, np.ndarray) and not p.raw]  # fmt: skip
        arrays += [g._a for p, g in zip(self.outs, given, strict=False) if not p.raw]
        if size is not None:  # CuPy: the loop size where every array is raw
            if arrays:
                raise ValueError("size is given, but there are non-raw arrays")
            arrays = [np.empty(int(size), np.int8)]
        if not arrays:  # raw arrays do not decide the loop size
            raise ValueError("Loop size is undecided.")
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        array_params = {
            p.name for p, v in zip(self.ins, values, strict=True) if isinstance(v, np.ndarray)
        }
        lib = _compile(self.source(typemap, array_params))
        traffic.launch()
        outs = [
            given[j]._a if p.raw else np.empty(shape, self._dtype(p, typemap))
            for j, p in enumerate(self.outs)
        ]
        for p, g in zip(self.outs, given, strict=False):
            if p.raw:
                if g._a.dtype != self._dtype(p, typemap) or not g._a.flags.c_contiguous:
                    raise TypeError(f"{self.name}: raw output {p.name} must be C-contiguous "
                                    f"{p.type}")  # fmt: skip
            elif g._a.dtype != self._dtype(p, typemap) or g._a.shape != shape:
                raise TypeError(f"{self.name}: output {p.name} must be {shape} {p.type}")
        n = int(np.prod(shape, dtype=np.int64))
        cargs = [ctypes.c_longlong(n)]
        keep = []
        for p, v in zip(self.ins, values, strict=True):
            dt = self._dtype(p, typemap)
            if isinstance(v, np.ndarray) and p.raw:
                a = np.ascontiguousarray(v)  # flat C order, as CuPy's CArray indexes it
                keep.append(a)
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(v, np.ndarray):
                a = np.ascontiguousarray(np.broadcast_to(v, shape))
                keep.append(a)
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            else:  # a scalar is cast to its parameter's type, as CuPy's CScalar is
                cargs.append(_CT[dt](np.array(v).astype(dt).item()))
        cargs += [ctypes.c_void_p(o.ctypes.data) for o in outs]
        getattr(lib, self.name)(*cargs)
        for p, o, g in zip(self.outs, outs, given, strict=False):
            if not p.raw:
                g._a[...] = o
        wrapped = list(given) or [DeviceArray(o) for o in outs]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)


class ReductionKernel(_Kernel):
    """``cupy.ReductionKernel`` over the whole array (the only form nitihw uses)."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", preamble="", **kwargs):  # fmt: skip
        super().__init__(in_params, out_params, name)
        self.preamble = preamble
        self.map_expr, self.reduce_expr = map_expr, reduce_expr
        self.post_map_expr, self.identity = post_map_expr, identity

    def source(self, typemap, cuda: bool = False, name: str | None = None) -> str:
        """The reduction, serial, as C++ or (``cuda``, for a compile check) a CUDA kernel."""
        (x,), (y,) = self.ins, self.outs
        cx, cy = self._ctype(x), self._ctype(y)
        return (
            f"{'' if cuda else _PRELUDE}{self._typedefs(typemap)}typedef {cy} _type_reduce;\n"
            f"{self.preamble}\n"
            f'extern "C" {_GLOBAL if cuda else ""}void {name or self.name}'
            f"(long long _n, const {cx} *_raw_{x.name}, {cy} *_raw_{y.name}) {{\n"
            f"  _type_reduce _acc = _type_reduce({self.identity});\n"
            f"  {_HOST_LOOP} {{\n"
            f"    const {cx} &{x.name} = _raw_{x.name}[i];\n"
            f"    _type_reduce a = _acc, b = _type_reduce({self.map_expr});\n"
            f"    _acc = {self.reduce_expr};\n  }}\n"
            f"  _type_reduce a = _acc;\n  {cy} &{y.name} = *_raw_{y.name};\n"
            f"  ({self.post_map_expr});\n}}\n"  # CuPy's POST_MAP(a) is one expression
        )

    def __call__(self, *args, axis=None):
        if axis is not None or len(self.ins) != 1 or len(self.outs) != 1:
            raise NotImplementedError("the stand-in reduces one array over all its elements")
        typemap, (x,) = self._bind(args)
        lib = _compile(self.source(typemap))
        traffic.launch()
        a = np.ascontiguousarray(x)
        out = np.empty((), self._dtype(self.outs[0], typemap))
        getattr(lib, self.name)(
            ctypes.c_longlong(a.size),
            ctypes.c_void_p(a.ctypes.data),
            ctypes.c_void_p(out.ctypes.data),
        )
        return DeviceArray(out)


# ---- cuBLAS -----------------------------------------------------------------------------------
CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUBLAS_OP_N, CUBLAS_OP_T = 3, 10, 72, 0, 1


def _matrix(ptr: int, dtype, ld: int, rows: int, cols: int) -> np.ndarray:
    """The column-major ``rows x cols`` matrix at ``ptr`` with leading dimension ``ld``."""
    ct = _CT[np.dtype(dtype)]
    buf = (ct * (ld * cols)).from_address(ptr)
    return np.frombuffer(buf, dtype).reshape(cols, ld).T[:rows, :]


def gemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
           ldc, computeType, algo):  # fmt: skip
    """``cublasGemmEx`` for int8: C = alpha op(A) op(B) + beta C, column-major."""
    if (transa, transb) != (CUBLAS_OP_T, CUBLAS_OP_N):
        raise ValueError(
            "CUBLAS_STATUS_NOT_SUPPORTED: int8 tensor-core GEMMs take both operands contiguous "
            f"along K (transa T, transb N); got {(transa, transb)}"
        )
    if (Atype, Btype, Ctype, computeType) != (CUDA_R_8I, CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I):
        raise ValueError(
            "CUBLAS_STATUS_NOT_SUPPORTED: the stand-in knows the int8 path only, got types "
            f"{(Atype, Btype, Ctype, computeType)}"
        )
    traffic.launch()
    al = ctypes.c_int32.from_address(alpha).value
    be = ctypes.c_int32.from_address(beta).value
    problems = []
    if al not in (0, 1) or be not in (0, 1):
        problems.append(f"alpha, beta = {al}, {be} (int8 GEMMs take 0 or 1)")
    if lda % 4 or ldb % 4:
        problems.append(f"lda, ldb = {lda}, {ldb} (int8 GEMMs need multiples of 4)")
    if A % 4 or B % 4:
        problems.append("A or B not 32-bit aligned")
    if lda < max(1, k) or ldb < max(1, k) or ldc < max(1, m):
        problems.append(f"leading dimensions {lda}, {ldb}, {ldc} too small for m={m}, k={k}")
    if problems:
        raise ValueError("CUBLAS_STATUS_INVALID_VALUE: " + "; ".join(problems))
    if k * 128 * 128 >= 2**53:
        raise NotImplementedError(f"k = {k}: too long for the stand-in's exact float64 sums")
    # float64 sums of int8 products are exact while k * 128 * 128 < 2**53
    a = _matrix(A, np.int8, lda, k, m).T.astype(np.float64)  # op(A) = A^T
    b = _matrix(B, np.int8, ldb, k, n).astype(np.float64)
    c = _matrix(C, np.int32, ldc, m, n)
    out = al * (a @ b).astype(np.int64) + be * c.astype(np.int64)
    if out.size and (out.min() < -(2**31) or out.max() > 2**31 - 1):
        raise OverflowError("an int8 GEMM result does not fit its int32 output")
    c[...] = out


# ---- the modules ------------------------------------------------------------------------------
class _Namespace(types.ModuleType):
    """A NumPy namespace seen through the stand-in: functions take and return device arrays."""

    def __init__(self, name: str, target):
        super().__init__(name)
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if isinstance(attr, types.ModuleType):
            return _Namespace(f"{self.__name__}.{name}", attr)
        if isinstance(attr, type) or not callable(attr):  # dtypes, constants
            return attr

        def function(*args, **kwargs):
            if name == "ascontiguousarray":  # a copy only when not already contiguous
                a = args[0]
                if not (isinstance(a, DeviceArray) and a._a.flags.c_contiguous):
                    traffic.launch()
            elif name not in _VIEWS:
                traffic.launch()
            return _call(attr, args, kwargs)

        return functools.wraps(attr)(function)


class _CupyModule(_Namespace):
    ndarray = DeviceArray
    ElementwiseKernel = ElementwiseKernel
    ReductionKernel = ReductionKernel

    def __init__(self):
        super().__init__("cupy", np)
        self.cuda = types.SimpleNamespace(
            is_available=lambda: True,
            runtime=types.SimpleNamespace(
                getDeviceCount=lambda: 1,
                getDeviceProperties=lambda i: {"name": b"CPU stand-in for CuPy"},
            ),
            device=types.SimpleNamespace(get_cublas_handle=lambda: 0),
            Device=lambda i=0: types.SimpleNamespace(synchronize=lambda: None),
        )

    @staticmethod
    def asarray(x, dtype=None):
        out = np.asarray(_unwrap(x, host_ok=True), dtype)
        if not isinstance(x, DeviceArray):
            traffic.up(out)
            traffic.launch()  # the copy to the device
        elif out is not x._a:  # a conversion
            traffic.launch()
        return DeviceArray(out)

    @staticmethod
    def array(x, dtype=None, copy=True):
        out = np.array(_unwrap(x, host_ok=True), dtype, copy=copy)
        if not isinstance(x, DeviceArray):
            traffic.up(out)
        return DeviceArray(out)

    @staticmethod
    def asnumpy(x):
        return x.get() if isinstance(x, DeviceArray) else np.asarray(x)


def modules() -> dict[str, types.ModuleType]:
    """The ``sys.modules`` entries that make ``import cupy`` and cuBLAS find the stand-in."""
    cupy = _CupyModule()
    backends = types.ModuleType("cupy_backends")
    backends.cuda = types.ModuleType("cupy_backends.cuda")
    backends.cuda.libs = types.ModuleType("cupy_backends.cuda.libs")
    cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    cublas.gemmEx = gemmEx
    backends.cuda.libs.cublas = cublas
    return {
        "cupy": cupy,
        "cupy_backends": backends,
        "cupy_backends.cuda": backends.cuda,
        "cupy_backends.cuda.libs": backends.cuda.libs,
        "cupy_backends.cuda.libs.cublas": cublas,
    }


def _clear_kernel_caches():
    from nitihw.gpu import kernels

    for f in vars(kernels).values():
        if hasattr(f, "cache_clear"):
            f.cache_clear()


def per_step(model: str, dataset: str, batch: int, profile: str = "niti",
             steps: tuple[int, int] = (3, 6)) -> dict:  # fmt: skip
    """What one GPU training step moves and launches, on the stand-in: the :class:`Traffic`
    counters of a ``steps[1]``-step and a ``steps[0]``-step ``train()`` run, their difference
    per step, so that set-up and evaluation cancel. Keys: ``to_device_bytes``,
    ``to_host_bytes``, ``syncs``, ``launches``."""
    from nitihw.golden.datasets import load_dataset
    from nitihw.golden.train import TrainConfig, train

    data = load_dataset(dataset)
    keys = ("to_device_bytes", "to_host_bytes", "syncs", "launches")
    counts = []
    with installed():
        from nitihw.gpu.backend import CupyBackend

        for n in steps:
            be = CupyBackend()  # its first construction runs the smoke check: not counted
            traffic.reset()
            cfg = TrainConfig(model=model, dataset=dataset, backend="gpu", epochs=99,
                              batch=batch, steps=n, profile=profile)  # fmt: skip
            train(cfg, data, be)
            counts.append([getattr(traffic, k) for k in keys])
    span = steps[1] - steps[0]
    return {k: (b - a) / span for k, a, b in zip(keys, *counts, strict=True)}


@contextlib.contextmanager
def installed():
    """Within the block ``import cupy`` gives the stand-in (and the kernels are rebuilt)."""
    standin = modules()
    saved = {name: sys.modules.get(name) for name in standin}
    sys.modules.update(standin)
    _clear_kernel_caches()
    try:
        yield sys.modules["cupy"]
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        _clear_kernel_caches()
