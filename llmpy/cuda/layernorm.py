"""Launchers for kernels/layernorm.cu. Tensors of any leading shape: N = size // C rows."""
import functools

import cupy as cp
import numpy as np

from llmpy.cuda.matmul import bias_backward
from llmpy.cuda.runtime import ceil_div, kernel, launch, shared_limits, workspace
from llmpy.launch_config import (BACKWARD_BLOCK, BACKWARD_THREADS, LAYERNORM_FORWARD_BLOCK,
                                 ROWS_IN_REGISTERS_C, SHARED_BACKWARD_BLOCK, SUMS_BLOCK,
                                 SUMS_THREADS, layernorm_backward_bytes,
                                 layernorm_backward_shared_block, layernorm_backward_shared_bytes,
                                 residual_layernorm_bytes)

# the layernorm_backward_shared grid: at most this many blocks, each over a fixed range of rows
MAX_BLOCKS = 1024


@functools.cache
def _sm_count(device):
    return cp.cuda.Device(device).attributes["MultiProcessorCount"]


def _rows(inp, weight):
    C = weight.size
    assert C % 8 == 0 and inp.shape[-1] == C and inp.flags.c_contiguous
    return inp.size // C, C


def layernorm_forward(out, mean, rstd, inp, weight, bias, block_size=LAYERNORM_FORWARD_BLOCK):
    N, C = _rows(inp, weight)
    launch("layernorm", "layernorm_forward", ceil_div(N, block_size // 32), block_size,
           out, mean, rstd, inp, weight, bias, N, C)


def residual_layernorm_forward(residual, out, mean, rstd, a, b, weight, bias,
                               block_size=LAYERNORM_FORWARD_BLOCK):
    """residual = a + b, then layernorm_forward(out, mean, rstd, residual, weight, bias), in one
    kernel: the same bits as residual_forward followed by layernorm_forward."""
    N, C = _rows(a, weight)
    assert all(x.flags.c_contiguous and x.size == a.size for x in (b, residual, out))
    launch("layernorm", "residual_layernorm_forward", ceil_div(N, block_size // 32), block_size,
           residual, out, mean, rstd, a, b, weight, bias, N, C,
           shared_mem=residual_layernorm_bytes(C, block_size))


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, block_size=None):
    """dinp, dweight, dbias accumulate (+=)."""
    _backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, None, block_size)


def layernorm_backward_sums(dinp, dweight, dbias, dout, inp, weight, mean, rstd, dinp_sums,
                            block_size=None):
    """llmpy/fused.py's: layernorm_backward, and dinp_sums (C) += the column sums of dinp as
    stored after the += (in the model: the next projection's bias gradient, taken here instead
    of by a pass of its own over dinp)."""
    _backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, dinp_sums, block_size)


def _backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, dinp_sums, block_size):
    """The sums are deterministic: per-block partials added in a fixed order, which depends on
    N, C, the block size and the GPU's number of SMs."""
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
           N, C, shared_mem=layernorm_backward_bytes(C, block_size, parts))
    _sum_partials(dweight, dbias, dinp_sums, partials, blocks, C)


def layernorm_backward_shared(dinp, dweight, dbias, dout, inp, weight, mean, rstd,
                              block_size=SHARED_BACKWARD_BLOCK):
    """layernorm_backward for any C, accumulators in shared memory (dev/cuda/layernorm.py's
    version 2; the backward for C > ROWS_IN_REGISTERS_C), in blocks of at most block_size
    threads: fewer where the device's shared memory does not hold that many warps' accumulators."""
    N, C = _rows(inp, weight)
    static = kernel("layernorm", "layernorm_backward_shared").shared_size_bytes
    block_size = layernorm_backward_shared_block(C, block_size, shared_limits(), static)
    warps = block_size // 32
    rows_per_block = max(warps, ceil_div(N, MAX_BLOCKS))
    blocks = ceil_div(N, rows_per_block)
    partials = workspace("layernorm_partials", blocks * 2 * C, np.float32)
    launch("layernorm", "layernorm_backward_shared", blocks, block_size,
           dinp, partials, dout, inp, weight, mean, rstd, N, C, rows_per_block,
           shared_mem=layernorm_backward_shared_bytes(C, block_size))
    _sum_partials(dweight, dbias, None, partials, blocks, C)


def _sum_partials(dweight, dbias, dinp_sums, partials, blocks, C):
    """dbias += the column sums of partials (blocks, 2C or 3C)'s first C columns, dweight += of
    the next C, dinp_sums (where given) += of the last C; in block order."""
    parts = 2 if dinp_sums is None else 3
    launch("layernorm", "layernorm_backward_params", ceil_div(parts * C, 32), (32, 32),
           dweight, dbias, dinp_sums, partials, blocks, C, parts)
