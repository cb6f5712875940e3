"""Launchers for kernels/flash_attention.cu: causal attention without the (T, T) matrix.
The forward saves only the log-sum-exp of each query row (B, NH, T); the backward recomputes
the probabilities from it, tile by tile."""
import math

import numpy as np

from llmpy.cuda.runtime import ceil_div, launch, workspace

HEAD_SIZE, TILE, THREADS = 64, 64, 128
TILE_BYTES = TILE * 72 * 2     # a bf16 tile in shared memory, rows padded to 72
# the backward kernels' shared memory: the block's own two tiles and two double-buffered
# streamed ones (dK/dV: also the streamed rows' lse and delta, twice)
DKDV_SMEM = 6 * TILE_BYTES + 4 * TILE * 4
DQ_SMEM = 6 * TILE_BYTES
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


def attention_forward(out, lse, qkv, NH):
    B, T = _sizes(qkv, NH)
    scale = 1.0 / math.sqrt(HEAD_SIZE)
    launch("flash_attention", "flash_attention_forward", (ceil_div(T, TILE), B * NH), THREADS,
           out, lse, qkv, T, NH, scale * LOG2E)


def attention_backward(dqkv, dout, qkv, out, lse, NH, source="flash_attention"):
    """dqkv overwritten: dK and dV by one kernel per key tile, dQ by one per query tile.
    source: the .cu file (or (file, macros): dev/cuda builds variants of this one)."""
    B, T = _sizes(qkv, NH)
    scale = 1.0 / math.sqrt(HEAD_SIZE)
    delta = workspace("flash_attention_delta", B * NH * T, np.float32)
    launch(source, "flash_attention_delta", ceil_div(B * NH * T, 8), 256, delta, dout, out, B, T, NH)
    grid = (ceil_div(T, TILE), B * NH)
    for name, shared in (("flash_attention_backward_dkdv", DKDV_SMEM),
                         ("flash_attention_backward_dq", DQ_SMEM)):
        launch(source, name, grid, THREADS, dqkv, dout, qkv, lse, delta, T, NH, scale,
               scale * LOG2E, shared_mem=shared)
