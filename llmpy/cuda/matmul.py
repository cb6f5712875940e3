"""matmul: cuBLASLt (llmpy/cuda/cublaslt.py) for all three products, forward, dinp and dweight,
with their epilogues, bf16 in and out with fp32 accumulation; the bias gradient by our kernels
(kernels/matmul.cu).

cuBLAS is column-major, our tensors row-major: the bytes of a row-major (R, K) matrix are the
column-major (K, R) matrix, its transpose. So out (N, OC) = inp (N, C) @ W^T is computed as
out^T = W inp^T: m = OC, n = N, k = C, with W read transposed (llm.c's layout).

The epilogues run on the fp32 accumulator before out is rounded to bf16 once: the bias (a vector
read by the epilogue: out is written once, never prefilled or read back), GELU in the fc matmul
(out = gelu(pre_gelu), with pre_gelu written alongside for the backward: no gelu kernel), and
GELU's gradient in the fcproj backward's dinp product (no gelu_backward kernel). dweight
accumulates (beta = 1) over a product whose k is B*T: cuBLASLt splits that k over blocks
where dweight alone has too few output tiles to fill the GPU (attproj: 768 x 768), summing
the parts in an fp32 workspace. (Its BGRADB epilogue, dbias summed inside the dweight product,
made that product slower by more than our dbias kernels take: dev/cuda/matmul.py version 9.)

Determinism: cuBLAS gives bit-identical results run to run for a given toolkit version on GPUs
of the same architecture and SM count while one stream is active (cuBLAS documentation, "Results
reproducibility"); cuBLASLt's side (a fixed algorithm and workspace per plan, split-K parts
summed in a fixed order) is in llmpy/cuda/cublaslt.py, and tests/gpu/test_matmul.py compares the
bits of two runs. dbias is reduced by our kernels in a fixed order.
"""
import numpy as np

from llmpy.cuda import cublaslt
from llmpy.cuda.cublaslt import OP_N, OP_T
from llmpy.cuda.runtime import ceil_div, launch, workspace
from llmpy.launch_config import BIAS_WARPS

BIAS_ROWS = 256       # rows per chunk of the dbias reduction: 768 blocks at B*T = 65536, C = 768
# forward epilogue by (bias given, pre_gelu given)
FORWARD_EPILOGUES = {(False, False): cublaslt.EPILOGUE_DEFAULT,
                     (True, False): cublaslt.EPILOGUE_BIAS,
                     (False, True): cublaslt.EPILOGUE_GELU_AUX,
                     (True, True): cublaslt.EPILOGUE_GELU_AUX_BIAS}


def _check(OC, C, *arrays):
    assert OC % 8 == 0 and C % 8 == 0, "the bias kernels move 8 bf16 per thread"
    assert all(a.flags.c_contiguous for a in arrays if a is not None), \
        "cuBLAS reads them as dense matrices"


def matmul_forward(out, inp, weight, bias):
    """out (..., OC) = inp (..., C) @ weight (OC, C)^T + bias (OC), the bias in the epilogue."""
    _forward(out, inp, weight, bias, None)


def matmul_gelu_forward(out, pre_gelu, inp, weight, bias):
    """llmpy/fused.py's: pre_gelu = inp @ weight^T + bias and out = gelu(pre_gelu) (shaped as
    out), in one cuBLASLt matmul."""
    assert pre_gelu.shape == out.shape, "pre_gelu is laid out as out"
    _forward(out, inp, weight, bias, pre_gelu)


def _forward(out, inp, weight, bias, pre_gelu):
    OC, C = weight.shape
    N = inp.size // C
    _check(OC, C, out, inp, weight, pre_gelu)
    epilogue = FORWARD_EPILOGUES[bias is not None, pre_gelu is not None]
    cublaslt.matmul(OP_T, OP_N, OC, N, C, weight, C, inp, C, out, OC, epilogue, bias, pre_gelu)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """dinp = dout @ weight (overwritten); dweight += dout^T @ inp; dbias += column sums of dout."""
    _backward(dinp, dweight, dbias, dout, inp, weight, None)


def gelu_matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu):
    """llmpy/fused.py's: matmul_backward with inp = gelu(pre_gelu), and dinp the gradient of
    pre_gelu: (dout @ weight) * gelu'(pre_gelu), GELU's backward in the gemm's epilogue."""
    assert pre_gelu.shape == dinp.shape, "pre_gelu is laid out as dinp"
    _backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu)


def _backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu):
    OC, C = weight.shape
    N = inp.size // C
    _check(OC, C, dinp, dweight, dout, inp, weight, pre_gelu)
    if dbias is not None:
        bias_backward(dbias, dout)
    epilogue = cublaslt.EPILOGUE_DEFAULT if pre_gelu is None else cublaslt.EPILOGUE_DGELU
    cublaslt.matmul(OP_N, OP_N, C, N, OC, weight, C, dout, OC, dinp, C, epilogue,
                    aux=pre_gelu)                                              # dinp^T = W^T dout^T
    cublaslt.matmul(OP_N, OP_T, C, OC, N, inp, C, dout, OC, dweight, C,
                    accumulate=True)                                           # dW^T += inp^T dout


def bias_backward(dbias, dout, rows_per_chunk=BIAS_ROWS):
    """dbias (OC) += sum over the rows of dout (..., OC): partial sums per chunk of rows, then
    the chunks in order. rows_per_chunk sets the first pass's parallelism (dev/cuda/matmul.py)."""
    OC = dbias.size
    N = dout.size // OC
    chunks = ceil_div(N, rows_per_chunk)
    partial = workspace("matmul_dbias_partial", chunks * OC, np.float32)
    launch("matmul", "bias_backward_partial", (ceil_div(OC, 32 * 8), chunks), (32, BIAS_WARPS),
           partial, dout, N, OC, rows_per_chunk)
    bias_backward_finish(dbias, partial, chunks)


def bias_backward_finish(dbias, partial, chunks):
    """dbias (OC) += the column sums of partial (chunks, OC) fp32, summed in chunk order; also
    the second half of the attention backward's qkv bias gradient (llmpy/cuda/flash_attention.py)."""
    OC = dbias.size
    launch("matmul", "bias_backward_finish", ceil_div(OC, 32), (32, BIAS_WARPS),
           dbias, partial, chunks, OC)
