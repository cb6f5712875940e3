"""Launchers for kernels/layernorm.cu. Tensors of any leading shape: N = size // C rows."""
import numpy as np

from llmpy.cuda.runtime import ceil_div, launch, workspace

FORWARD_BLOCK = 256
BACKWARD_BLOCK = 128
# backward: at most this many blocks (so partial sums of dweight/dbias), each over a fixed range
# of rows; the ranges depend only on N and the block size, so the sums' order does too
MAX_BLOCKS = 1024


def _rows(inp, weight):
    C = weight.size
    assert C % 8 == 0 and inp.shape[-1] == C and inp.flags.c_contiguous
    return inp.size // C, C


def layernorm_forward(out, mean, rstd, inp, weight, bias, block_size=FORWARD_BLOCK):
    N, C = _rows(inp, weight)
    launch("layernorm", "layernorm_forward", ceil_div(N, block_size // 32), block_size,
           out, mean, rstd, inp, weight, bias, N, C)


def residual_layernorm_forward(residual, out, mean, rstd, a, b, weight, bias,
                               block_size=FORWARD_BLOCK):
    """residual = a + b, then layernorm_forward(out, mean, rstd, residual, weight, bias), in one
    kernel: the same bits as residual_forward followed by layernorm_forward."""
    N, C = _rows(a, weight)
    assert all(x.flags.c_contiguous and x.size == a.size for x in (b, residual, out))
    shared = block_size // 32 * C * 2    # each warp's row of the residual, bf16
    launch("layernorm", "residual_layernorm_forward", ceil_div(N, block_size // 32), block_size,
           residual, out, mean, rstd, a, b, weight, bias, N, C, shared_mem=shared)


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd,
                       block_size=BACKWARD_BLOCK):
    """dinp, dweight, dbias accumulate (+=)."""
    N, C = _rows(inp, weight)
    warps = block_size // 32
    rows_per_block = max(warps, ceil_div(N, MAX_BLOCKS))
    blocks = ceil_div(N, rows_per_block)
    partials = workspace("layernorm_partials", blocks * 2 * C, np.float32)
    shared = warps * 2 * ceil_div(C, 256) * 256 * 4   # see layernorm_backward in the .cu
    launch("layernorm", "layernorm_backward", blocks, block_size,
           dinp, partials, dout, inp, weight, mean, rstd, N, C, rows_per_block,
           shared_mem=shared)
    launch("layernorm", "layernorm_backward_params", ceil_div(2 * C, 32), (32, 32),
           dweight, dbias, partials, blocks, C)
