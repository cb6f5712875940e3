"""Launchers for kernels/layernorm.cu. Tensors of any leading shape: N = size // C rows."""
import functools

import cupy as cp
import numpy as np

from llmpy.cuda.runtime import ceil_div, launch, workspace

FORWARD_BLOCK = 256
# backward, C <= ROWS_IN_REGISTERS_C (layernorm_backward in the .cu): blocks of BACKWARD_BLOCK
# threads; the kernel's launch bound (BACKWARD_THREADS) keeps it at <= 128 registers a thread, so
# an SM holds BACKWARD_THREADS threads: the grid is that many blocks an SM, one wave. Blocks of
# 128-512 threads time within ~1% of each other on the H200 (dev/cuda/layernorm.py version 4)
BACKWARD_BLOCK = 256
BACKWARD_THREADS = 512
ROWS_IN_REGISTERS_C = 768
# backward for larger C (layernorm_backward_shared): at most this many blocks, each over a fixed
# range of rows
SHARED_BACKWARD_BLOCK = 128
MAX_BLOCKS = 1024


@functools.cache
def _sm_count(device):
    return cp.cuda.Device(device).attributes["MultiProcessorCount"]


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
    """dinp, dweight, dbias accumulate (+=). dweight and dbias are deterministic: sums of
    per-block partials in a fixed order, which depends on N, C, the block size and the GPU's
    number of SMs."""
    N, C = _rows(inp, weight)
    if C > ROWS_IN_REGISTERS_C:
        layernorm_backward_shared(dinp, dweight, dbias, dout, inp, weight, mean, rstd)
        return
    assert block_size % 32 == 0 and block_size <= BACKWARD_THREADS
    warps = block_size // 32
    per_sm = BACKWARD_THREADS // block_size
    blocks = min(_sm_count(cp.cuda.Device().id) * per_sm, ceil_div(N, warps))
    partials = workspace("layernorm_partials", blocks * 2 * C, np.float32)
    launch("layernorm", "layernorm_backward", blocks, block_size,
           dinp, partials, dout, inp, weight, mean, rstd, N, C,
           shared_mem=warps * 2 * C * 4)    # each warp's dbias, dweight sums, fp32
    _sum_partials(dweight, dbias, partials, blocks, C)


def layernorm_backward_shared(dinp, dweight, dbias, dout, inp, weight, mean, rstd,
                              block_size=SHARED_BACKWARD_BLOCK):
    """layernorm_backward for any C, accumulators in shared memory (dev/cuda/layernorm.py's
    version 2; the backward for C > ROWS_IN_REGISTERS_C)."""
    N, C = _rows(inp, weight)
    warps = block_size // 32
    rows_per_block = max(warps, ceil_div(N, MAX_BLOCKS))
    blocks = ceil_div(N, rows_per_block)
    partials = workspace("layernorm_partials", blocks * 2 * C, np.float32)
    shared = warps * 2 * ceil_div(C, 256) * 256 * 4   # see layernorm_backward_shared in the .cu
    launch("layernorm", "layernorm_backward_shared", blocks, block_size,
           dinp, partials, dout, inp, weight, mean, rstd, N, C, rows_per_block,
           shared_mem=shared)
    _sum_partials(dweight, dbias, partials, blocks, C)


def _sum_partials(dweight, dbias, partials, blocks, C):
    """dbias += the column sums of partials (blocks, 2C)'s first C columns, dweight += of the
    last C, in block order."""
    launch("layernorm", "layernorm_backward_params", ceil_div(2 * C, 32), (32, 32),
           dweight, dbias, partials, blocks, C)
