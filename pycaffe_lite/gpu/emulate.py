"""Run the CUDA ElementwiseKernels of `kernels.py` on the CPU, for tests without a GPU.

Each `KernelSpec` is translated into a C++ function with CuPy's
ElementwiseKernel semantics (one loop iteration per element `i` of the
outputs; a `raw` parameter is a pointer indexed by hand; a non-raw output is
a reference to element `i`; a non-raw input is a scalar (the emulator does
not broadcast arrays, and the kernels here pass only scalars that way); the type placeholder `T` is a template
parameter), compiled with the system C++ compiler for float and double, and
called through ctypes.  What this checks is the kernels' own code (index
arithmetic, bounds, summation order) and the Python wrappers' arguments;
what it cannot check is CuPy's compilation (NVRTC) and launch, which only a
device run covers (tests/gpu/).

    from pycaffe_lite.gpu import emulate, kernels
    with kernels.emulated(emulate.runner()):
        cols = kernels.im2col(x_numpy, geom)      # the CUDA kernel body, run on the CPU

`runner()` raises `EmulatorUnavailable` when no C++ compiler is found.
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from . import kernels as _kernels

# CuPy's reserved names in ElementwiseKernel code: n, i and anything starting with "_".
RESERVED = ("i", "n")

_CTYPES = {"int8": "signed char", "uint8": "unsigned char", "int16": "short", "uint16": "unsigned short",
           "int32": "int", "uint32": "unsigned int", "int64": "long long", "uint64": "unsigned long long",
           "float32": "float", "float64": "double", "bool": "bool"}
_CT_SCALARS = {"int": ctypes.c_int, "long long": ctypes.c_longlong, "float": ctypes.c_float,
               "double": ctypes.c_double, "unsigned int": ctypes.c_uint, "bool": ctypes.c_bool,
               "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte, "short": ctypes.c_short,
               "unsigned short": ctypes.c_ushort, "unsigned long long": ctypes.c_ulonglong}
_T_TYPES = {"float": np.float32, "double": np.float64}


class EmulatorUnavailable(RuntimeError):
    pass


def parse_params(text):
    """[(is_raw, type, name)] of an ElementwiseKernel parameter list ('raw T x, int32 h')."""
    params = []
    for item in text.split(","):
        words = item.split()
        if not words:
            continue
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"cannot parse kernel parameter '{item.strip()}'")
        params.append((raw, words[0], words[1]))
    return params


def _ctype(type_name):
    if type_name == "T":
        return "T"
    if type_name not in _CTYPES:
        raise ValueError(f"kernel parameter type '{type_name}' is not known to the emulator")
    return _CTYPES[type_name]


def translate(spec):
    """C++ source of one kernel: a template body plus extern "C" float and double entry points."""
    ins, outs = parse_params(spec.in_params), parse_params(spec.out_params)
    sig, bind = ["long long _size"], []
    for raw, type_name, name in ins:
        ct = _ctype(type_name)
        if raw:
            sig.append(f"const {ct}* {name}")
        else:   # a non-raw input: the emulator supports scalars (broadcast to every i)
            sig.append(f"const {ct} {name}")
    for raw, type_name, name in outs:
        ct = _ctype(type_name)
        if raw:
            sig.append(f"{ct}* {name}")
        else:
            sig.append(f"{ct}* _out_{name}")
            bind.append(f"{ct}& {name} = _out_{name}[i];")
    body = (f"template <typename T>\nstatic void {spec.name}_body({', '.join(sig)}) {{\n"
            f"  const long long n = _size; (void)n;\n"
            f"  for (long long i = 0; i < _size; ++i) {{\n    " + "\n    ".join(bind) + "\n"
            f"    {{\n{spec.operation}\n    }}\n  }}\n}}\n")
    for cname in _T_TYPES:
        csig = [s.replace("T*", f"{cname}*").replace("const T ", f"const {cname} ") for s in sig]
        names = [s.split()[-1].lstrip("*") for s in sig]
        body += (f'extern "C" void {spec.name}_{cname}({", ".join(csig)}) {{\n'
                 f"  {spec.name}_body<{cname}>({', '.join(names)});\n}}\n")
    return body


def source(specs=None):
    """The C++ translation unit of `specs` (default: every kernel in kernels.KERNELS)."""
    specs = _kernels.KERNELS.values() if specs is None else specs
    return "#include <cmath>\n\n" + "\n".join(translate(s) for s in specs)


def compiler():
    """The C++ compiler the emulator uses ($CXX, g++, clang++ or c++), or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


_LIBS = {}


def build(specs=None):
    """Compile the kernels (cached per source text for this process); returns the ctypes library."""
    text = source(specs)
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    if key in _LIBS:
        return _LIBS[key]
    cxx = compiler()
    if cxx is None:
        raise EmulatorUnavailable("no C++ compiler (g++, clang++ or $CXX) to emulate the CUDA kernels")
    folder = tempfile.mkdtemp(prefix="pycaffe_kernels_")
    src, lib = os.path.join(folder, f"k{key}.cpp"), os.path.join(folder, f"k{key}.so")
    with open(src, "w") as handle:
        handle.write(text)
    cmd = [cxx, "-std=c++11", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Werror",
           "-Wno-unused-variable", "-o", lib, src]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kernel emulation failed to compile ({' '.join(cmd)}):\n{result.stderr}")
    _LIBS[key] = ctypes.CDLL(lib)
    return _LIBS[key]


def runner(specs=None):
    """A `run(spec, args, outs)` for kernels.emulated(): the C++ translation on NumPy arrays."""
    lib = build(specs)
    keep = []

    def run(spec, args, outs):
        ins, out_params = parse_params(spec.in_params), parse_params(spec.out_params)
        if len(args) != len(ins) or len(outs) != len(out_params):
            raise TypeError(f"{spec.name} takes {len(ins)} inputs and {len(out_params)} outputs, "
                            f"got {len(args)} and {len(outs)}")
        t_arrays = [a for a, (_, t, _) in zip(list(args) + list(outs), ins + out_params)
                    if t == "T" and isinstance(a, np.ndarray)]
        dtypes = {np.dtype(a.dtype) for a in t_arrays}
        if len(dtypes) != 1:
            raise TypeError(f"{spec.name}: the arrays typed T have dtypes {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        cname = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}.get(dtype)
        if cname is None:
            raise TypeError(f"{spec.name}: the emulator runs float32 and float64, got {dtype}")
        size = outs[0].size
        call = [ctypes.c_longlong(size)]
        for value, (raw, type_name, name) in zip(args, ins):
            ct = cname if type_name == "T" else _ctype(type_name)
            if raw:
                arr = np.ascontiguousarray(value, dtype=_np_type(ct))
                keep.append(arr)
                call.append(ctypes.c_void_p(arr.ctypes.data))
            elif isinstance(value, np.ndarray) and value.ndim:
                raise TypeError(f"{spec.name}: the emulator takes scalars for the non-raw input "
                                f"'{name}', got an array of shape {value.shape}")
            else:
                call.append(_CT_SCALARS[ct](value))
        temps = []
        for out, (raw, type_name, name) in zip(outs, out_params):
            ct = cname if type_name == "T" else _ctype(type_name)
            if out.dtype != _np_type(ct):
                raise TypeError(f"{spec.name}: output '{name}' must be {_np_type(ct)}, got {out.dtype}")
            if not raw and out.size != size:
                raise ValueError(f"{spec.name}: outputs differ in size")
            work = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
            temps.append((out, work))
            call.append(ctypes.c_void_p(work.ctypes.data))
        getattr(lib, f"{spec.name}_{cname}")(*call)
        for out, work in temps:
            if work is not out:
                out[...] = work
        keep.clear()

    return run


def _np_type(ctype_name):
    for np_name, cname in _CTYPES.items():
        if cname == ctype_name:
            return np.dtype(np_name)
    raise ValueError(ctype_name)


def declared_names(operation):
    """Names the kernel code declares as local variables (for the reserved-name check)."""
    pattern = (r"\b(?:const\s+)?(?:long\s+long|unsigned|int|T|float|double|bool|size_t|ptrdiff_t)"
               r"\s*&?\s+([A-Za-z_]\w*)\s*[=;]")
    return re.findall(pattern, operation)
