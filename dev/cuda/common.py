"""Shared by the dev/cuda scripts: the dev kernels' module, the result table, the versions named
on the command line, and cuBLAS's gemm for the earlier versions built on it; bf16 transfers,
poisoned outputs, the error measure and CUDA-event timing come from llmpy.testing, as the GPU
tests take them. Each script runs as `python dev/cuda/<family>.py [version]` from the repository
root, with llmpy installed (make install)."""
import sys
from pathlib import Path

import cupy as cp
import numpy as np
from cupy_backends.cuda.libs import cublas

from llmpy.cuda.runtime import module
from llmpy.testing.bf16 import bf16, gpu, host, poisoned, randn   # noqa: F401
from llmpy.testing.compare import rel_error   # noqa: F401
from llmpy.testing.timing import median_ms   # noqa: F401

DEV_DIR = Path(__file__).resolve().parent


def dev_module(name):
    """dev/cuda/<name>.cu, the earlier versions of a family's kernels, built like kernels/."""
    return module(DEV_DIR / f"{name}.cu")


OP_N, OP_T = cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T
BF16, COMPUTE_32F = 14, 68       # CUDA_R_16BF; CUBLAS_COMPUTE_32F: fp32 accumulation
ALGO = -1                        # CUBLAS_GEMM_DEFAULT: cuBLAS's heuristics choose the kernel
# alpha and beta are read through host pointers (the handle's default pointer mode); the array
# lives as long as the module, so the pointers stay valid
_SCALARS = np.array([0.0, 1.0], dtype=np.float32)
_ZERO, _ONE = _SCALARS.ctypes.data, _SCALARS.ctypes.data + 4


def gemm(transa, transb, m, n, k, A, lda, B, ldb, C, ldc, accumulate=False,
         batch=1, stride_a=0, stride_b=0, stride_c=0):
    """C = op(A) op(B), or C += op(A) op(B) with accumulate (beta = 1: cuBLAS adds in fp32 and
    rounds to bf16 once), in cuBLAS's column-major terms (llmpy/cuda/matmul.py), all bf16,
    through CuPy's cuBLAS handle. batch > 1 runs `batch` products, the i-th on A + i*stride_a,
    B + i*stride_b, C + i*stride_c (elements)."""
    handle = cp.cuda.device.get_cublas_handle()
    beta = _ONE if accumulate else _ZERO
    if batch == 1:
        cublas.gemmEx(handle, transa, transb, m, n, k, _ONE,
                      A.data.ptr, BF16, lda, B.data.ptr, BF16, ldb,
                      beta, C.data.ptr, BF16, ldc, COMPUTE_32F, ALGO)
    else:
        cublas.gemmStridedBatchedEx(handle, transa, transb, m, n, k, _ONE,
                                    A.data.ptr, BF16, lda, stride_a,
                                    B.data.ptr, BF16, ldb, stride_b,
                                    beta, C.data.ptr, BF16, ldc, stride_c,
                                    batch, COMPUTE_32F, ALGO)


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def selected_versions(versions):
    """The versions named on the command line (all when none is)."""
    picked = [int(a) for a in sys.argv[1:]] or sorted(versions)
    unknown = [v for v in picked if v not in versions]
    if unknown:
        sys.exit(f"unknown version(s) {unknown}; this script has {sorted(versions)}")
    return picked
