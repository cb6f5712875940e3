"""Loading and launching our CUDA kernels: kernels/<name>.cu compiled at run time by NVRTC
through cupy.RawModule (options from llmpy/kernel_options.py), cached per file."""
import functools
from pathlib import Path

import cupy as cp
import numpy as np

from llmpy import kernel_options
from llmpy.kernel_options import KERNEL_DIR, OPTIONS


def arch_option():
    return kernel_options.arch_option(cp.cuda.Device().compute_capability)   # "90" on H100/H200


@functools.cache
def module(source):
    """The compiled kernels/<source>.cu, or the .cu file at path `source` (dev/cuda's earlier
    versions, built the same way); source (name or path, ("-DNAME=value", ...)) builds it with
    those macros (dev/cuda's variants of a kernel's compile-time knobs)."""
    source, defines = source if isinstance(source, tuple) else (source, ())
    path = source if isinstance(source, Path) else KERNEL_DIR / f"{source}.cu"
    return cp.RawModule(code=path.read_text(), options=OPTIONS + (arch_option(), *defines),
                        backend="nvrtc")


@functools.cache
def kernel(module_name, kernel_name):
    return module(module_name).get_function(kernel_name)


def ceil_div(a, b):
    return -(-a // b)


DEFAULT_SHARED = 48 * 1024    # dynamic shared memory a kernel may take without opting in
NULL = np.uint64(0)           # a null device pointer: 8 bytes, like any pointer
_shared_limits = {}           # (module, kernel): the limit it has been raised to


def launch(module_name, kernel_name, grid, block, *args, shared_mem=0):
    """Launch an extern "C" kernel. Python ints become int32 and Python floats float32 (a bare
    Python float would be passed as a C double), None a null pointer; numpy scalars keep their
    type; arrays are passed as device pointers. shared_mem (bytes of dynamic shared memory) above 48 KB raises
    the kernel's limit first, once per new maximum."""
    cargs = tuple(np.int32(a) if type(a) is int else np.float32(a) if type(a) is float else
                  NULL if a is None else a for a in args)
    function = kernel(module_name, kernel_name)
    if shared_mem > _shared_limits.get((module_name, kernel_name), DEFAULT_SHARED):
        function.max_dynamic_shared_size_bytes = shared_mem
        _shared_limits[module_name, kernel_name] = shared_mem
    function(grid if isinstance(grid, tuple) else (grid,),
             block if isinstance(block, tuple) else (block,), cargs, shared_mem=shared_mem)


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
