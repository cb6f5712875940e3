"""Launchers for kernels/layernorm.cu. Tensors of any leading shape: N = size // C rows."""
import functools

import cupy as cp
import numpy as np

from llmpy.cuda.matmul import bias_backward
from llmpy.cuda.runtime import ceil_div, launch, workspace

FORWARD_BLOCK = 256
# backward, C <= ROWS_IN_REGISTERS_C (layernorm_backward in the .cu): blocks of BACKWARD_BLOCK
# threads; the kernel's launch bound (BACKWARD_THREADS) keeps it at <= 128 registers a thread, so
# an SM holds BACKWARD_THREADS threads: the grid is that many blocks an SM, one wave. Blocks of
# 128-512 threads time within ~1% of each other on the H200 (dev/cuda/layernorm.py version 4)
BACKWARD_BLOCK = 256
BACKWARD_THREADS = 512
# layernorm_backward_sums (dinp's column sums too): 154 registers, so at most 384 threads an SM,
# in blocks of 128
SUMS_BLOCK, SUMS_THREADS = 128, 384
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


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, dinp_sums=None,
                       block_size=None):
    """dinp, dweight, dbias accumulate (+=); dinp_sums (C), where given, += the column sums of
    dinp as stored after the += (in the model: the next projection's bias gradient, taken here
    instead of by a pass of its own over dinp). The sums are deterministic: per-block partials
    added in a fixed order, which depends on N, C, the block size and the GPU's number of SMs."""
    N, C = _rows(inp, weight)
    if C > ROWS_IN_REGISTERS_C:
        layernorm_backward_shared(dinp, dweight, dbias, dout, inp, weight, mean, rstd)
        if dinp_sums is not None:
            bias_backward(dinp_sums, dinp)
        return
    sums = dinp_sums is not None
    name, threads = ("layernorm_backward_sums", SUMS_THREADS) if sums else \
        ("layernorm_backward", BACKWARD_THREADS)
    block_size = block_size or (SUMS_BLOCK if sums else BACKWARD_BLOCK)
    assert block_size % 32 == 0 and block_size <= threads
    warps, parts = block_size // 32, 3 if sums else 2
    blocks = min(_sm_count(cp.cuda.Device().id) * (threads // block_size), ceil_div(N, warps))
    partials = workspace("layernorm_partials", blocks * parts * C, np.float32)
    launch("layernorm", name, blocks, block_size, dinp, partials, dout, inp, weight, mean, rstd,
           N, C, shared_mem=warps * parts * C * 4)    # each warp's sums, fp32
    _sum_partials(dweight, dbias, dinp_sums, partials, blocks, C)


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
    _sum_partials(dweight, dbias, None, partials, blocks, C)


def _sum_partials(dweight, dbias, dinp_sums, partials, blocks, C):
    """dbias += the column sums of partials (blocks, 2C or 3C)'s first C columns, dweight += of
    the next C, dinp_sums (where given) += of the last C; in block order."""
    parts = 2 if dinp_sums is None else 3
    launch("layernorm", "layernorm_backward_params", ceil_div(parts * C, 32), (32, 32),
           dweight, dbias, dinp_sums, partials, blocks, C, parts)
