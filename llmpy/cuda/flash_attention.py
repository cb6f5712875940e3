"""Launchers for kernels/flash_attention.cu and kernels/flash_attention_wgmma.cu: causal
attention without the (T, T) matrix. The forward saves only the log-sum-exp of each query row
(B, NH, T); the backward recomputes the probabilities from it, tile by tile. On Hopper the
forward and the backward's dK/dV and dQ kernels run on wgmma (flash_attention_wgmma.cu, sm_90a
only), elsewhere on mma.sync; both write the same outputs."""
import math

import ml_dtypes
import numpy as np

from llmpy.cuda.matmul import bias_backward_finish
from llmpy.cuda import runtime
from llmpy.cuda.runtime import ceil_div, launch, workspace
from llmpy.launch_config import (DKDV_SMEM, DQ_SMEM, HEAD_SIZE, TILE, TILE_BYTES,  # noqa: F401
                                 WGMMA_DQ_SMEM, WGMMA_DQ_TILES, WGMMA_ROWS, WGMMA_THREADS,
                                 wgmma_dkdv_smem, wgmma_forward_smem)

THREADS = 128
LOG2E = 1.4426950408889634     # the kernels use exp2: exp(x) = exp2(x * log2(e))


def attention_saved(B, NH, T):
    """What the forward keeps for the backward: the log2-sum-exp per query row, fp32."""
    return (B, NH, T), np.float32


def _sizes(qkv, NH):
    B, T, C3 = qkv.shape
    if C3 // 3 != NH * HEAD_SIZE:
        raise ValueError(f"flash attention runs head size {HEAD_SIZE}; this model has "
                         f"C={C3 // 3}, NH={NH} (head size {C3 // 3 / NH:g})")
    return B, T


hopper = runtime.wgmma_built      # the tests and dev/cuda ask whether the wgmma kernels can run


def attention_forward(out, lse, qkv, NH, wgmma=None):
    """out = causal softmax(q k^T / sqrt(hs)) v, lse its log2-sum-exp per query row. wgmma: the
    Hopper kernel (None: where hopper() and LLMPY_WGMMA is not 0; False: the mma.sync one, which the tests
    check on a Hopper too)."""
    B, T = _sizes(qkv, NH)
    scale = 1.0 / math.sqrt(HEAD_SIZE)
    if runtime.wgmma() if wgmma is None else wgmma:
        launch("flash_attention_wgmma", "flash_attention_forward_wgmma",
               (ceil_div(T, WGMMA_ROWS), B * NH), WGMMA_THREADS, out, lse, qkv, T, NH,
               scale * LOG2E, shared_mem=wgmma_forward_smem())
    else:
        launch("flash_attention", "flash_attention_forward", (ceil_div(T, TILE), B * NH),
               THREADS, out, lse, qkv, T, NH, scale * LOG2E)


def backward_delta(dout, out, B, T, NH):
    """delta (B, NH, T) fp32 = the row sums of dout * out: the backward's preprocessing, in a
    workspace."""
    delta = workspace("flash_attention_delta", B * NH * T, np.float32)
    launch("flash_attention", "flash_attention_delta", ceil_div(B * NH * T * 8, 256), 256, delta,
           dout, out, B, T, NH)                # 8 threads a row
    return delta


def attention_backward(dqkv, dout, qkv, out, lse, NH, wgmma=None):
    """dqkv overwritten: dK and dV by one kernel per key tile, which also stores each tile pair's
    dS (a scratch buffer of B*NH*pairs 64x64 bf16 tiles), then dQ = dS K by one per query tile.
    wgmma: the Hopper dK/dV and dQ kernels, as in attention_forward."""
    _backward(dqkv, dout, qkv, out, lse, NH, None, wgmma)


def attention_backward_sums(dqkv, dout, qkv, out, lse, NH, dqkv_sums, wgmma=None):
    """llmpy/fused.py's: attention_backward, and dqkv_sums (3C) += the column sums of dqkv (the
    qkv matmul's bias gradient): each block sums the rows it writes, bias_backward_finish adds
    the blocks up in order."""
    _backward(dqkv, dout, qkv, out, lse, NH, dqkv_sums, wgmma)


def _backward(dqkv, dout, qkv, out, lse, NH, dbias, wgmma):
    B, T = _sizes(qkv, NH)
    tiles = ceil_div(T, TILE)
    scale = 1.0 / math.sqrt(HEAD_SIZE)
    delta = backward_delta(dout, out, B, T, NH)
    ds = workspace("flash_attention_ds", B * NH * tiles * (tiles + 1) // 2 * TILE * TILE,
                   ml_dtypes.bfloat16)
    partial = None
    if dbias is not None:
        partial = workspace("flash_attention_dbias_partial", B * tiles * dqkv.shape[-1],
                            np.float32)
    grid = (tiles, B * NH)
    args = (dqkv, partial, ds, dout, qkv, lse, delta, T, NH, scale, scale * LOG2E)
    if runtime.wgmma() if wgmma is None else wgmma:
        launch("flash_attention_wgmma", "flash_attention_backward_dkdv_wgmma", grid, THREADS,
               *args, shared_mem=wgmma_dkdv_smem())
        launch("flash_attention_wgmma", "flash_attention_backward_dq_wgmma",
               (ceil_div(tiles, WGMMA_DQ_TILES), B * NH), WGMMA_DQ_TILES * THREADS, dqkv, partial,
               ds, qkv, T, NH, scale, shared_mem=WGMMA_DQ_SMEM)
    else:
        launch("flash_attention", "flash_attention_backward_dkdv", grid, THREADS, *args,
               shared_mem=DKDV_SMEM)
        launch("flash_attention", "flash_attention_backward_dq", grid, THREADS, dqkv, partial, ds,
               qkv, T, NH, scale, shared_mem=DQ_SMEM)
    if dbias is not None:
        bias_backward_finish(dbias, partial, B * tiles)
