"""Causal self-attention that materializes the (T, T) attention matrix (llm.c's train_gpt2.cu
before cuDNN): permutes and softmaxes in kernels/attention.cu, the products as cuBLAS
strided-batched gemms over the B*NH heads, each head's matrices row-major (T, hs) or (T, T).
cuBLAS sees the transposes (see llmpy/cuda/matmul.py), so each product X = A B is computed as
X^T = B^T A^T; the comments give the row-major product.

The gemms cover the whole (T, T) matrix, masked upper triangle included: att and dpreatt hold
exact zeros there, so it adds nothing. Skipping it is left to the flash-attention version.
"""
import math

import ml_dtypes

from llmpy.cuda.matmul import OP_N, OP_T, gemm
from llmpy.cuda.runtime import ceil_div, launch, workspace

PERMUTE_BLOCK = 256
SOFTMAX_BLOCK = 256   # 8 warps: 8 rows of att per block


def attention_saved_shape(B, NH, T):
    return (B, NH, T, T)


def _heads(B, NH, T, hs, count):
    """`count` scratch (B, NH, T, hs) tensors. Forward (4) and backward (7) share one
    workspace, asked for at the backward's size so that it never grows."""
    n = B * NH * T * hs
    buf = workspace("attention_heads", 7 * n, ml_dtypes.bfloat16)
    return [buf[i * n:(i + 1) * n] for i in range(count)]


def _permute(name, n, *args):
    launch("attention", name, ceil_div(n // 8, PERMUTE_BLOCK), PERMUTE_BLOCK, *args)


def _softmax(name, rows, *args):
    launch("attention", name, ceil_div(rows, SOFTMAX_BLOCK // 32), SOFTMAX_BLOCK, *args)


def _shapes(qkv, NH):
    B, T, C3 = qkv.shape
    hs = C3 // 3 // NH
    assert hs % 8 == 0, "the permutes move 8 bf16 per thread"
    assert qkv.flags.c_contiguous
    return B, T, hs


def attention_forward(out, att, qkv, NH):
    """out (B, T, C) = softmax(mask(q k^T / sqrt(hs))) v per head; att (B, NH, T, T) saved."""
    B, T, hs = _shapes(qkv, NH)
    n, BH = B * T * NH * hs, B * NH
    q, k, v, y = _heads(B, NH, T, hs, 4)
    _permute("split_qkv", n, q, k, v, qkv, n, T, NH, hs)
    # preatt = q k^T, written into att and turned into att in place by the softmax
    gemm(OP_T, OP_N, T, T, hs, k, hs, q, hs, att, T,
         batch=BH, stride_a=T * hs, stride_b=T * hs, stride_c=T * T)
    _softmax("softmax_forward", BH * T, att, BH * T, T, 1.0 / math.sqrt(hs))
    # y = att v
    gemm(OP_N, OP_N, hs, T, T, v, hs, att, T, y, hs,
         batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    _permute("merge_heads", n, out, y, n, T, NH, hs)


def attention_backward(dqkv, dout, qkv, att, NH):
    """dqkv (B, T, 3C) overwritten, from dout (B, T, C) and the forward's att."""
    B, T, hs = _shapes(qkv, NH)
    n, BH = B * T * NH * hs, B * NH
    q, k, v, dy, dq, dk, dv = _heads(B, NH, T, hs, 7)
    datt = workspace("attention_datt", BH * T * T, ml_dtypes.bfloat16)
    _permute("split_qkv", n, q, k, v, qkv, n, T, NH, hs)
    _permute("split_heads", n, dy, dout, n, T, NH, hs)
    # datt = dy v^T
    gemm(OP_T, OP_N, T, T, hs, v, hs, dy, hs, datt, T,
         batch=BH, stride_a=T * hs, stride_b=T * hs, stride_c=T * T)
    # dv = att^T dy
    gemm(OP_N, OP_T, hs, T, T, dy, hs, att, T, dv, hs,
         batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    # datt becomes dpreatt in place
    _softmax("softmax_backward", BH * T, datt, att, BH * T, T, 1.0 / math.sqrt(hs))
    # dq = dpreatt k
    gemm(OP_N, OP_N, hs, T, T, k, hs, datt, T, dq, hs,
         batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    # dk = dpreatt^T q
    gemm(OP_N, OP_T, hs, T, T, q, hs, datt, T, dk, hs,
         batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    _permute("merge_qkv", n, dqkv, dq, dk, dv, n, T, NH, hs)
