"""matmul: cuBLASLt for the forward and dinp products, with their epilogues
(llmpy/cuda/cublaslt.py), cuBLAS for the accumulating dweight gemm, and the dbias kernels
(kernels/matmul.cu); bf16 in and out with fp32 accumulation. gemm() is shared with the
attention's batched products.

cuBLAS is column-major, our tensors row-major: the bytes of a row-major (R, K) matrix are the
column-major (K, R) matrix, its transpose. So out (N, OC) = inp (N, C) @ W^T is computed as
out^T = W inp^T: m = OC, n = N, k = C, with W read transposed (llm.c's layout).

The epilogues run on the fp32 accumulator before out is rounded to bf16 once: the bias (a vector
read by the epilogue: out is written once, never prefilled or read back), GELU in the fc matmul
(out = gelu(pre_gelu), with pre_gelu written alongside for the backward: no gelu kernel), and
GELU's gradient in the fcproj backward's dinp product (no gelu_backward kernel).

Determinism: cuBLAS gives bit-identical results run to run for a given toolkit version on GPUs
of the same architecture and SM count while one stream is active (cuBLAS documentation, "Results
reproducibility"; the atomics mode that some routines offer stays at its default, off). We rely
on that: one stream, the handle's defaults, CUBLAS_GEMM_DEFAULT; cuBLASLt's side (a fixed
algorithm and workspace per plan, no split-K) is in llmpy/cuda/cublaslt.py. dbias is reduced by
our kernels in a fixed order. (cuBLASLt's BGRAD epilogues would overwrite dbias, which we
accumulate over micro-steps, so they are not used.)
"""
import cupy as cp
import numpy as np
from cupy_backends.cuda.libs import cublas

from llmpy.cuda import cublaslt
from llmpy.cuda.runtime import ceil_div, launch, workspace

OP_N, OP_T = cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T
BF16 = 14             # CUDA_R_16BF
COMPUTE_32F = 68      # CUBLAS_COMPUTE_32F: fp32 accumulation, no reduced-precision shortcut
ALGO = -1             # CUBLAS_GEMM_DEFAULT: cuBLAS's heuristics choose the kernel
# alpha and beta are read through host pointers (host pointer mode, the handle's default);
# the array lives as long as the module, so the pointers stay valid
_SCALARS = np.array([0.0, 1.0], dtype=np.float32)
_ZERO, _ONE = _SCALARS.ctypes.data, _SCALARS.ctypes.data + 4

BIAS_ROWS = 256       # rows per chunk of the dbias reduction: 768 blocks at B*T = 65536, C = 768
BIAS_WARPS = 8        # as in kernels/matmul.cu
# forward epilogue by (bias given, pre_gelu given)
FORWARD_EPILOGUES = {(False, False): cublaslt.EPILOGUE_DEFAULT,
                     (True, False): cublaslt.EPILOGUE_BIAS,
                     (False, True): cublaslt.EPILOGUE_GELU_AUX,
                     (True, True): cublaslt.EPILOGUE_GELU_AUX_BIAS}


def gemm(transa, transb, m, n, k, A, lda, B, ldb, C, ldc, accumulate=False,
         batch=1, stride_a=0, stride_b=0, stride_c=0):
    """C = op(A) op(B), or C += op(A) op(B) with accumulate (beta = 1: cuBLAS adds in fp32 and
    rounds to bf16 once), in cuBLAS's column-major terms; all bf16. batch > 1 runs `batch`
    products, the i-th on A + i*stride_a, B + i*stride_b, C + i*stride_c (elements)."""
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


def _check(OC, C, *arrays):
    assert OC % 8 == 0 and C % 8 == 0, "the bias kernels move 8 bf16 per thread"
    assert all(a.flags.c_contiguous for a in arrays if a is not None), \
        "cuBLAS reads them as dense matrices"


def matmul_forward(out, inp, weight, bias, pre_gelu=None):
    """out (..., OC) = inp (..., C) @ weight (OC, C)^T + bias (OC); with pre_gelu (shaped as out):
    pre_gelu = inp @ weight^T + bias and out = gelu(pre_gelu), in one cuBLASLt matmul."""
    OC, C = weight.shape
    N = inp.size // C
    _check(OC, C, out, inp, weight, pre_gelu)
    assert pre_gelu is None or pre_gelu.shape == out.shape, "pre_gelu is laid out as out"
    epilogue = FORWARD_EPILOGUES[bias is not None, pre_gelu is not None]
    cublaslt.matmul(OP_T, OP_N, OC, N, C, weight, C, inp, C, out, OC, epilogue, bias, pre_gelu)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu=None):
    """dinp = dout @ weight (overwritten); dweight += dout^T @ inp; dbias += column sums of dout.
    With pre_gelu (inp = gelu(pre_gelu)), dinp is the gradient of pre_gelu instead:
    (dout @ weight) * gelu'(pre_gelu), GELU's backward fused into the gemm's epilogue."""
    OC, C = weight.shape
    N = inp.size // C
    _check(OC, C, dinp, dweight, dout, inp, weight, pre_gelu)
    assert pre_gelu is None or pre_gelu.shape == dinp.shape, "pre_gelu is laid out as dinp"
    if dbias is not None:
        bias_backward(dbias, dout)
    epilogue = cublaslt.EPILOGUE_DEFAULT if pre_gelu is None else cublaslt.EPILOGUE_DGELU
    cublaslt.matmul(OP_N, OP_N, C, N, OC, weight, C, dout, OC, dinp, C, epilogue,
                    aux=pre_gelu)                                              # dinp^T = W^T dout^T
    gemm(OP_N, OP_T, C, OC, N, inp, C, dout, OC, dweight, C, accumulate=True)  # dW^T += inp^T dout


def bias_backward(dbias, dout, rows_per_chunk=BIAS_ROWS):
    """dbias (OC) += sum over the rows of dout (..., OC): partial sums per chunk of rows, then
    the chunks in order. rows_per_chunk sets the first pass's parallelism (dev/cuda/matmul.py)."""
    OC = dbias.size
    N = dout.size // OC
    chunks = ceil_div(N, rows_per_chunk)
    partial = workspace("matmul_dbias_partial", chunks * OC, np.float32)
    launch("matmul", "bias_backward_partial", (ceil_div(OC, 32 * 8), chunks), (32, BIAS_WARPS),
           partial, dout, N, OC, rows_per_chunk)
    launch("matmul", "bias_backward_finish", ceil_div(OC, 32), (32, BIAS_WARPS),
           dbias, partial, chunks, OC)

