"""Launchers for kernels/flash_attention.cu and kernels/flash_attention_wgmma.cu: causal
attention without the (T, T) matrix. The forward saves only the log-sum-exp of each query row
(B, NH, T); the backward recomputes the probabilities from it, tile by tile. On Hopper the
forward and the backward's dK/dV and dQ kernels run on wgmma (flash_attention_wgmma.cu, sm_90a
only), elsewhere on mma.sync; both write the same outputs."""
import math

import cupy as cp
import ml_dtypes
import numpy as np

from llmpy.cuda.matmul import bias_backward_finish
from llmpy.cuda.runtime import ceil_div, launch, workspace

HEAD_SIZE, TILE, THREADS = 64, 64, 128
TILE_BYTES = TILE * 72 * 2     # a bf16 tile in shared memory, rows padded to 72
# the backward kernels' shared memory: dK/dV: the block's own two tiles, two double-buffered
# streamed ones, the streamed rows' lse and delta, twice, and dS's staging tile; dQ: two
# double-buffered tiles
DKDV_SMEM = 7 * TILE_BYTES + 4 * TILE * 4
DQ_SMEM = 4 * TILE_BYTES
LOG2E = 1.4426950408889634     # the kernels use exp2: exp(x) = exp2(x * log2(e))
WGMMA_ROWS, WGMMA_THREADS = 128, 256   # the wgmma forward: query rows and threads a block


def wgmma_forward_smem(stages=3):
    """The wgmma forward's shared memory: Q, `stages` stages of a K and a V tile (128-byte rows),
    1 KB to align them to 1024 bytes (FWD_STAGES in the .cu)."""
    return (WGMMA_ROWS + 2 * stages * TILE) * HEAD_SIZE * 2 + 1024


def wgmma_dkdv_smem(stages=3):
    """The wgmma dK/dV kernel's (one warpgroup, 64 keys a block): K, V and the dS staging tile,
    `stages` stages of a Q and a dO tile (128-byte rows) with their rows' lse and delta, 1 KB to
    align the tiles (BWD_STAGES in the .cu)."""
    return (3 + 2 * stages) * TILE * HEAD_SIZE * 2 + stages * 2 * TILE * 4 + 1024


# the wgmma dQ kernel: 2 warpgroups (query tiles) a block, 4 stages of a K tile and a dS tile a
# warpgroup, 1 KB to align them (DQ_WGS, DQ_STAGES in the .cu)
WGMMA_DQ_TILES, WGMMA_DQ_STAGES = 2, 4
WGMMA_DQ_SMEM = WGMMA_DQ_STAGES * (WGMMA_DQ_TILES + 1) * TILE * HEAD_SIZE * 2 + 1024


def attention_saved(B, NH, T):
    """What the forward keeps for the backward: the log2-sum-exp per query row, fp32."""
    return (B, NH, T), np.float32


def _sizes(qkv, NH):
    B, T, C3 = qkv.shape
    if C3 // 3 != NH * HEAD_SIZE:
        raise ValueError(f"flash attention runs head size {HEAD_SIZE}; this model has "
                         f"C={C3 // 3}, NH={NH} (head size {C3 // 3 / NH:g})")
    return B, T


def hopper():
    """Whether the current GPU is a Hopper (sm_90), where the wgmma kernels run."""
    return cp.cuda.Device().compute_capability == "90"


def attention_forward(out, lse, qkv, NH, wgmma=None):
    """out = causal softmax(q k^T / sqrt(hs)) v, lse its log2-sum-exp per query row. wgmma: the
    Hopper kernel (None: where the GPU is a Hopper; False: the mma.sync one, which the tests
    check on a Hopper too)."""
    B, T = _sizes(qkv, NH)
    scale = 1.0 / math.sqrt(HEAD_SIZE)
    if hopper() if wgmma is None else wgmma:
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


def attention_backward(dqkv, dout, qkv, out, lse, NH, dbias=None, wgmma=None):
    """dqkv overwritten: dK and dV by one kernel per key tile, which also stores each tile pair's
    dS (a scratch buffer of B*NH*pairs 64x64 bf16 tiles), then dQ = dS K by one per query tile.
    dbias (3C), where given, += the column sums of dqkv (the qkv matmul's bias gradient): each
    block sums the rows it writes, bias_backward_finish adds the blocks up in order. wgmma: the
    Hopper dK/dV and dQ kernels, as in attention_forward."""
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
    if hopper() if wgmma is None else wgmma:
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
