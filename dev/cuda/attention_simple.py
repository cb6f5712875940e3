"""Causal self-attention that materializes the (T, T) attention matrix (llm.c's train_gpt2.cu
before cuDNN), the earlier versions of llmpy's attention (now flash attention,
kernels/flash_attention.cu): permutes and softmaxes in dev/cuda/attention.cu, the products as cuBLAS
strided-batched gemms (dev/cuda/common.py's gemm) over the B*NH heads, each head's matrices
row-major (T, hs) or (T, T). cuBLAS sees the transposes (see llmpy/cuda/matmul.py), so each
product X = A B is computed as X^T = B^T A^T; the comments give the row-major product.

Causality in the gemms: the query rows are cut into blocks of `row_block`, and rows r0..r1 need
keys 0..r1 only, so each product is one gemm per block over that part of the (T, T) matrix
(5/8 of it at T = 1024, row_block = 256, against all of it with one gemm). The blocks on the
diagonal reach above it, where att and dpreatt hold exact zeros (the softmaxes write them);
entries no block reads are not computed.
"""
import math
from pathlib import Path

import ml_dtypes
from common import OP_N, OP_T, gemm

from llmpy.cuda.runtime import ceil_div, launch, workspace

KERNELS = Path(__file__).with_name("attention.cu")

PERMUTE_BLOCK = 256
SOFTMAX_BLOCK = 256   # 8 warps: 8 rows of att per block
ROW_BLOCK = 256       # query rows per causal gemm block (dev/cuda/attention.py times others)


def attention_saved(B, NH, T):
    return (B, NH, T, T), ml_dtypes.bfloat16


def _heads(B, NH, T, hs, count):
    """`count` scratch (B, NH, T, hs) tensors. Forward (4) and backward (7) share one
    workspace, asked for at the backward's size so that it never grows."""
    n = B * NH * T * hs
    buf = workspace("attention_heads", 7 * n, ml_dtypes.bfloat16)
    return [buf[i * n:(i + 1) * n] for i in range(count)]


def _permute(name, n, *args):
    launch(KERNELS, name, ceil_div(n // 8, PERMUTE_BLOCK), PERMUTE_BLOCK, *args)


def _softmax(name, rows, *args):
    launch(KERNELS, name, ceil_div(rows, SOFTMAX_BLOCK // 32), SOFTMAX_BLOCK, *args)


def _shapes(qkv, att, NH, row_block):
    """B, T, hs and the rows per block (row_block None: one block, the whole matrix)."""
    B, T, C3 = qkv.shape
    hs = C3 // 3 // NH
    assert hs % 8 == 0, "the permutes move 8 bf16 per thread"
    assert row_block is None or row_block % 8 == 0, "blocks start 16-byte aligned in att"
    assert qkv.flags.c_contiguous and att.flags.c_contiguous, "cuBLAS reads them as dense"
    return B, T, hs, row_block or T


def _blocks(T, row_block):
    """(first, end) of each block of query rows."""
    return [(r0, min(r0 + row_block, T)) for r0 in range(0, T, row_block)]


def _at(x, offset):
    """x from its element `offset` on: where a gemm's block starts."""
    return x.reshape(-1)[offset:]


def attention_forward(out, att, qkv, NH, row_block=ROW_BLOCK, vectorized=True):
    """out (B, T, C) = softmax(mask(q k^T / sqrt(hs))) v per head; att (B, NH, T, T) saved.
    row_block (None: whole-matrix gemms) and vectorized (False: the fallback softmax at any T)
    are there for dev/cuda/attention.py to compare."""
    B, T, hs, row_block = _shapes(qkv, att, NH, row_block)
    n, BH = B * T * NH * hs, B * NH
    q, k, v, y = _heads(B, NH, T, hs, 4)
    _permute("split_qkv", n, q, k, v, qkv, n, T, NH, hs)
    blocks = _blocks(T, row_block)
    for r0, r1 in blocks:
        # preatt[r0:r1, :r1] = q[r0:r1] k[:r1]^T, written into att
        gemm(OP_T, OP_N, r1, r1 - r0, hs, k, hs, _at(q, r0 * hs), hs, _at(att, r0 * T), T,
             batch=BH, stride_a=T * hs, stride_b=T * hs, stride_c=T * T)
    # att = softmax of preatt in place, keys 0..t read, whole rows written
    if vectorized and T % 8 == 0:
        _softmax("softmax_forward_x128", BH * T, att, BH * T, T, 1.0 / math.sqrt(hs))
    else:
        _softmax("softmax_forward", BH * T, att, BH * T, T, 1.0 / math.sqrt(hs))
    for r0, r1 in blocks:
        # y[r0:r1] = att[r0:r1, :r1] v[:r1]
        gemm(OP_N, OP_N, hs, r1 - r0, r1, v, hs, _at(att, r0 * T), T, _at(y, r0 * hs), hs,
             batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    _permute("merge_heads", n, out, y, n, T, NH, hs)


def attention_backward(dqkv, dout, qkv, out, att, NH, row_block=ROW_BLOCK, vectorized=True):
    """dqkv (B, T, 3C) overwritten, from dout (B, T, C) and the forward's att (out, the forward's
    output, is not needed here). row_block and vectorized as in attention_forward."""
    B, T, hs, row_block = _shapes(qkv, att, NH, row_block)
    n, BH = B * T * NH * hs, B * NH
    q, k, v, dy, dq, dk, dv = _heads(B, NH, T, hs, 7)
    datt = workspace("attention_datt", BH * T * T, ml_dtypes.bfloat16)
    _permute("split_qkv", n, q, k, v, qkv, n, T, NH, hs)
    _permute("split_heads", n, dy, dout, n, T, NH, hs)
    blocks = _blocks(T, row_block)
    for r0, r1 in blocks:
        # datt[r0:r1, :r1] = dy[r0:r1] v[:r1]^T
        gemm(OP_T, OP_N, r1, r1 - r0, hs, v, hs, _at(dy, r0 * hs), hs, _at(datt, r0 * T), T,
             batch=BH, stride_a=T * hs, stride_b=T * hs, stride_c=T * T)
    for c0, c1 in blocks:
        # dv[c0:c1] = att[c0:, c0:c1]^T dy[c0:]: keys c0..c1 are seen by queries c0.. only
        gemm(OP_N, OP_T, hs, c1 - c0, T - c0, _at(dy, c0 * hs), hs, _at(att, c0 * T + c0), T,
             _at(dv, c0 * hs), hs, batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    # datt becomes dpreatt in place; the vectorized kernel writes zeros only as far as the
    # blocks of the next two gemms read
    if vectorized and T % 8 == 0:
        _softmax("softmax_backward_x128", BH * T, datt, att, BH * T, T, row_block,
                 1.0 / math.sqrt(hs))
    else:
        _softmax("softmax_backward", BH * T, datt, att, BH * T, T, 1.0 / math.sqrt(hs))
    for r0, r1 in blocks:
        # dq[r0:r1] = dpreatt[r0:r1, :r1] k[:r1]
        gemm(OP_N, OP_N, hs, r1 - r0, r1, k, hs, _at(datt, r0 * T), T, _at(dq, r0 * hs), hs,
             batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    for c0, c1 in blocks:
        # dk[c0:c1] = dpreatt[c0:, c0:c1]^T q[c0:]
        gemm(OP_N, OP_T, hs, c1 - c0, T - c0, _at(q, c0 * hs), hs, _at(datt, c0 * T + c0), T,
             _at(dk, c0 * hs), hs, batch=BH, stride_a=T * hs, stride_b=T * T, stride_c=T * hs)
    _permute("merge_qkv", n, dqkv, dq, dk, dv, n, T, NH, hs)
