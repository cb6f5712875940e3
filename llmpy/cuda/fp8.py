"""FP8 linear layers on Hopper: the casts of kernels/fp8.cu and cuBLASLt's FP8 products, with
llmpy/fp8.py's numbers (formats, delayed scales) as the reference.

A linear layer out = inp @ W^T (inp (N, C), W (OC, C), row-major) takes three products, and
cuBLASLt's FP8 wants both operands K-major (the contracted dimension innermost in memory), so
each product reads the copy of its operands that is stored that way:
    forward  out  (N, OC) = inp (N, C)  . W   (OC, C)     over C:  inp, W as stored
    dinp     dinp (N, C)  = dout (N, OC) . W^T (C, OC)    over OC: dout as stored, W transposed
    dweight  dW   (OC, C) += dout^T (OC, N) . inp^T (C, N) over N: both transposed
Activations and weights are E4M3, gradients E5M2; every operand comes with its scale's inverse
(a device fp32 scalar), which the product multiplies in. In cuBLASLt's column-major terms each
is D (m, n) = A^T B with A and B the row-major copies above read as column-major."""
import numpy as np

from llmpy import fp8
from llmpy.cuda import cublaslt, elementwise, matmul
from llmpy.cuda.cublaslt import CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, OP_N, OP_T
from llmpy.cuda.runtime import ceil_div, launch, workspace
from llmpy.launch_config import KNOBS

CAST_BLOCK = 512
TILE = KNOBS["fp8"]
CUDA_TYPES = {fp8.E4M3: CUDA_R_8F_E4M3, fp8.E5M2: CUDA_R_8F_E5M2}
BYTE = np.uint8             # an FP8 value as stored: its byte


def address(a):
    return a.data.ptr


def cast(out, amax, inp, scale, fmt):
    """out = fmt(inp * scale) bytes, same shape; *amax = max(*amax, max |inp|)."""
    assert inp.size % 8 == 0, "the cast moves 8 bf16 per thread"
    launch("fp8", f"cast_{fmt.name}", ceil_div(inp.size // 8, CAST_BLOCK), CAST_BLOCK,
           out, amax, inp, scale, inp.size)


def cast_transpose(out, out_t, amax, inp, scale, fmt, dbias=None):
    """As cast, and out_t = the transpose of out: inp (rows, cols), out_t (cols, rows). With
    dbias (cols), also dbias += the column sums of inp (inp the output gradient of a linear with a
    bias): each tile's sums as the cast reads it, then the row blocks' in order."""
    rows, cols = inp.shape[0], inp.size // inp.shape[0]
    assert rows % 8 == 0 and cols % 8 == 0, "rows and columns multiples of 8 (8-byte stores)"
    row_blocks = ceil_div(rows, TILE["TILE_ROWS"])
    partial = None if dbias is None else workspace("fp8_dbias_partial", row_blocks * cols, np.float32)
    launch("fp8", f"cast_transpose_{fmt.name}", (ceil_div(cols, TILE["TILE_COLS"]), row_blocks),
           TILE["TILE_THREADS"], out, out_t, amax, partial, inp, scale, rows, cols)
    if dbias is not None:
        matmul.bias_backward_finish(dbias, partial, row_blocks)


def update_scales(scale, scale_inv, history, amax, fmt, margin=0):
    """After a step, for every tensor of one format: push its amax into its history (tensors,
    length) and set its scale and inverse from the history (llmpy/fp8.py: push_amax, then
    next_scales); amax is reset to 0 for the next step. scale_inv (tensors) or (tensors, k):
    tensor t's inverse is its row's first value (k = 4 puts each on its own 16 bytes, as
    cuBLASLt's scale pointers need)."""
    tensors, length = history.shape
    launch("fp8", "fp8_update_scales", ceil_div(tensors, 128), 128, scale, scale_inv,
           scale_inv.size // tensors, history, amax, tensors, length, fmt.max, 2.0 ** -margin)


def _product(D, m, n, k, A, a_fmt, a_inv, B, b_fmt, b_inv, accumulate=False, fast_accum=False,
             epilogue=cublaslt.EPILOGUE_DEFAULT, bias=None, aux=None):
    cublaslt.matmul(OP_T, OP_N, m, n, k, A, k, B, k, D, m, epilogue, bias, aux,
                    accumulate=accumulate, fp8=(CUDA_TYPES[a_fmt], a_inv, CUDA_TYPES[b_fmt], b_inv),
                    fast_accum=fast_accum)


def forward(out, inp, inp_inv, weight, weight_inv, fast_accum=True, bias=None, pre_gelu=None):
    """out (N, OC) bf16 = inp (N, C) E4M3 . weight (OC, C) E4M3 over C, with llmpy/cuda/matmul.py's
    epilogues: + bias (OC, bf16); with pre_gelu, pre_gelu = the sum and out = gelu(pre_gelu)."""
    (N, C), OC = inp.shape, weight.shape[0]
    epilogue = matmul.FORWARD_EPILOGUES[bias is not None, pre_gelu is not None]
    _product(out, OC, N, C, weight, fp8.E4M3, weight_inv, inp, fp8.E4M3, inp_inv,
             fast_accum=fast_accum, epilogue=epilogue, bias=bias, aux=pre_gelu)


def backward_inp(dinp, dout, dout_inv, weight_t, weight_inv, pre_gelu=None):
    """dinp (N, C) bf16 = dout (N, OC) E5M2 . weight_t (C, OC) E4M3 over OC; with pre_gelu (laid
    out as dinp), then times gelu'(pre_gelu) (the fcproj backward's) by elementwise.gelu_backward
    in place: cuBLASLt runs the DGELU epilogue of an FP8 product as a kernel of its own, a pass
    over dinp three times slower than ours (docs/performance.md, "FP8 in the model")."""
    (N, OC), C = dout.shape, weight_t.shape[0]
    _product(dinp, C, N, OC, weight_t, fp8.E4M3, weight_inv, dout, fp8.E5M2, dout_inv)
    if pre_gelu is not None:
        elementwise.gelu_backward(dinp, pre_gelu, dinp)


def backward_weight(dweight, dout_t, dout_inv, inp_t, inp_inv):
    """dweight (OC, C) bf16 += dout_t (OC, N) E5M2 . inp_t (C, N) E4M3 over N."""
    (OC, N), C = dout_t.shape, inp_t.shape[0]
    _product(dweight, C, OC, N, inp_t, fp8.E4M3, inp_inv, dout_t, fp8.E5M2, dout_inv,
             accumulate=True)
