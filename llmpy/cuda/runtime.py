"""Loading and launching our CUDA kernels: kernels/<name>.cu compiled at run time by NVRTC for
the target of llmpy/kernel_options.py (the GPU's own machine code, or LLMPY_ARCH's), cached on
disk, and launched with their shared memory checked against the device's limits
(llmpy/launch_config.py). LLMPY_SYNC=1 synchronises after every launch, so that a kernel's fault
is reported at that kernel (the model then runs eager: a synchronisation cannot be captured)."""
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import cupy as cp
import numpy as np
from cuda.pathfinder import find_nvidia_header_directory
from cupy_backends.cuda.libs import nvrtc

from llmpy import LlmpyError, kernel_options
from llmpy.kernel_options import KERNEL_DIR, OPTIONS
from llmpy.launch_config import DEFAULT as DEFAULT_SHARED, Limits

SYNC = os.environ.get("LLMPY_SYNC", "0") not in ("", "0")


@functools.cache
def target():
    """The architecture NVRTC compiles for (kernel_options.target), "sm_90a" on H100/H200; PTX
    for the newest one NVRTC knows where it is older than the GPU (the driver compiles that)."""
    arch = kernel_options.target_from_env(cp.cuda.Device().compute_capability)
    newest = max(nvrtc.getSupportedArchs())
    if arch.startswith("sm_") and int(arch[3:].rstrip("a")) > newest:
        return f"compute_{newest}"
    return arch


def wgmma_built():
    """Whether the wgmma kernels can run: the kernels are built for sm_90a (a Hopper GPU, and no
    LLMPY_ARCH asking for another target)."""
    return target().endswith("90a")


def wgmma():
    """Whether attention runs on Hopper's wgmma kernels: they can (wgmma_built), and
    LLMPY_WGMMA=0 does not ask for the mma.sync ones (the Ampere path, run on a Hopper)."""
    return wgmma_built() and os.environ.get("LLMPY_WGMMA", "1") != "0"


@functools.cache
def cuda_headers():
    """NVRTC's -I for CUDA's own headers (cuda_bf16.h, ...): from the toolkit wheels that
    make install brings, or a system CUDA toolkit."""
    found = find_nvidia_header_directory("cudart")
    if found is None:
        raise LlmpyError("CUDA's headers (cuda_bf16.h) not found: no nvidia-cuda-runtime wheel and no "
                         "CUDA toolkit (CUDA_PATH); run `make clean install` on this machine")
    return f"-I{found}"


@functools.cache
def shared_limits():
    """The device's shared-memory limits, capped at LLMPY_MAX_SHARED_KB where it is set."""
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    limits = Limits(props["sharedMemPerBlockOptin"], props["sharedMemPerMultiprocessor"],
                    props["reservedSharedMemPerBlock"])
    cap = os.environ.get("LLMPY_MAX_SHARED_KB")
    if cap:
        if not cap.isdigit() or int(cap) < 48:
            raise LlmpyError(f"LLMPY_MAX_SHARED_KB={cap}: expected a whole number of KB, at least 48")
        limits = limits.capped(int(cap))
    return limits


def _cache_path(name, source_text, options):
    """Where the compiled code of these sources and options is kept (~/.cache/llmpy/kernels, or
    $LLMPY_KERNEL_CACHE): the key covers every header in kernels/, the options and NVRTC's
    version, so an edited .cuh is never served stale."""
    key = hashlib.sha256()
    for part in (source_text, *sorted(p.read_text() for p in KERNEL_DIR.glob("*.cuh")),
                 *options, str(nvrtc.getVersion())):
        key.update(part.encode() + b"\0")
    root = os.environ.get("LLMPY_KERNEL_CACHE") or Path.home() / ".cache" / "llmpy" / "kernels"
    return Path(root) / f"{name}-{key.hexdigest()[:24]}.bin"


def compile_source(path, options, arch):
    """The file holding NVRTC's machine code (sm_XY) or PTX (compute_XY) for the .cu file at
    path, compiled on first use; a compiler error is one line naming the file and the
    architecture, with the compiler's first error."""
    source_text = path.read_text()
    options = (*options, kernel_options.arch_option(arch))
    compiled = _cache_path(path.stem, source_text, options)
    if compiled.exists():
        return compiled
    program = nvrtc.createProgram(source_text, path.name, (), ())
    try:
        try:
            nvrtc.compileProgram(program, list(options))
        except nvrtc.NVRTCError:
            log = nvrtc.getProgramLog(program)
            first = next((line for line in log.splitlines() if "error" in line), log.strip())
            raise LlmpyError(f"{path}: NVRTC {'.'.join(map(str, nvrtc.getVersion()))} could "
                             f"not compile it for {arch}: {first.strip()}") from None
        code = nvrtc.getPTX(program) if arch.startswith("compute_") else nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    try:
        compiled.parent.mkdir(parents=True, exist_ok=True)
    except OSError:        # no cache folder to be had: a private one, a compile per process
        compiled = Path(tempfile.mkdtemp(prefix="llmpy-kernels-")) / compiled.name
    tmp = compiled.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(code)
    tmp.replace(compiled)           # whole or absent, for processes compiling side by side
    return compiled


@functools.cache
def module(source):
    """The compiled kernels/<source>.cu, or the .cu file at path `source` (dev/cuda's earlier
    versions, built the same way); source (name or path, ("-DNAME=value", ...)) builds it with
    those macros (dev/cuda's variants of a kernel's compile-time knobs)."""
    source, defines = source if isinstance(source, tuple) else (source, ())
    path = source if isinstance(source, Path) else KERNEL_DIR / f"{source}.cu"
    options = (*OPTIONS, cuda_headers(), *kernel_options.defines(path.stem, defines))
    return cp.RawModule(path=str(compile_source(path, options, target())))


@functools.cache
def kernel(module_name, kernel_name):
    return module(module_name).get_function(kernel_name)


def ceil_div(a, b):
    return -(-a // b)


NULL = np.uint64(0)           # a null device pointer: 8 bytes, like any pointer
_shared_limits = {}           # (module, kernel): the dynamic limit it has been raised to


def launch(module_name, kernel_name, grid, block, *args, shared_mem=0):
    """Launch an extern "C" kernel. Python ints become int32 and Python floats float32 (a bare
    Python float would be passed as a C double), None a null pointer; numpy scalars keep their
    type; arrays are passed as device pointers. shared_mem: bytes of dynamic shared memory; where
    they and the kernel's static shared memory pass 48 KB, the kernel's limit is raised first
    (once per new maximum), and where they pass the device's limit, that is an error naming
    the kernel. A CUDA error at the launch (or, with LLMPY_SYNC=1, in the kernel) names it too."""
    cargs = tuple(np.int32(a) if type(a) is int else np.float32(a) if type(a) is float else
                  NULL if a is None else a for a in args)
    function = kernel(module_name, kernel_name)
    key = (module_name, kernel_name)
    if shared_mem > _shared_limits.get(key, 0):
        static, limit = function.shared_size_bytes, shared_limits().per_block
        if static + shared_mem > limit:
            raise LlmpyError(f"kernel {kernel_name} ({module_name}.cu) asks for {static + shared_mem} "
                             f"bytes of shared memory ({static} static + {shared_mem} dynamic); this GPU "
                             f"allows {limit} a block")
        if static + shared_mem > DEFAULT_SHARED:
            function.max_dynamic_shared_size_bytes = shared_mem
        _shared_limits[key] = shared_mem
    try:
        function(grid if isinstance(grid, tuple) else (grid,),
                 block if isinstance(block, tuple) else (block,), cargs, shared_mem=shared_mem)
        if SYNC:
            cp.cuda.Device().synchronize()
    except cp.cuda.driver.CUDADriverError as e:
        raise LlmpyError(f"kernel {kernel_name} ({module_name}.cu), grid {grid}, block {block}, "
                         f"{shared_mem} bytes of dynamic shared memory: {e}") from None


_workspaces = {}


def workspace(name, size, dtype):
    """A scratch buffer of at least `size` elements kept between calls (grown when a larger one
    is asked for), so ops that need temporaries allocate only on their first call."""
    buf = _workspaces.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = _workspaces[name] = cp.empty(size, dtype=dtype)
    return buf[:size]


class Graph:
    """The GPU work of fn() (kernel launches, cuBLASLt products) captured into a CUDA graph, to be
    replayed on the current stream by launch(). fn must allocate no memory and never wait on
    the GPU: run it once for real first, so that every kernel is compiled and every workspace
    and cuBLASLt plan exists. The graph keeps the workspaces it saw alive, so that one grown
    later (a new buffer under the same name) cannot free memory the graph writes to."""

    def __init__(self, fn):
        stream = cp.cuda.Stream(non_blocking=True)     # capture needs a stream other than the
        with stream:                                   # legacy default one
            stream.begin_capture()
            try:
                fn()
            finally:
                self._graph = stream.end_capture()
        self._keep = list(_workspaces.values())

    def launch(self):
        self._graph.launch(cp.cuda.get_current_stream())
