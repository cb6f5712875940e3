"""Launchers for kernels/encoder.cu: token + position embedding, forward and backward."""
import numpy as np

from llmpy.cuda.runtime import ceil_div, launch, workspace

BLOCK = 256
SEGMENT = 32   # sorted positions summed by one thread of encoder_backward_wte_segments
RUNS_BLOCK = 128   # a block per segment: checks 128 segments a round for where a long run ends


def _row_stride(inp):
    """inp may be a (b,t) slice of a wider buffer: rows strided, tokens contiguous."""
    assert inp.dtype == np.int32 and inp.ndim == 2 and inp.strides[1] == 4
    return inp.strides[0] // 4


def encoder_forward(out, inp, wte, wpe, block_size=BLOCK):
    B, T = inp.shape
    C = wte.shape[1]
    assert C % 8 == 0 and out.flags.c_contiguous
    launch("encoder", "encoder_forward", ceil_div(B * T * C // 8, block_size), block_size,
           out, inp, wte, wpe, B * T, T, C, _row_stride(inp))


def encoder_backward(dwte, dwpe, dout, inp, block_size=BLOCK, segment=SEGMENT):
    """Deterministic: positions sorted by (token, position) on the GPU, then fixed-order sums
    (see kernels/encoder.cu). The sort is CuPy's in place (Thrust radix sort, no host sync); its
    temporary storage comes from CuPy's memory pool, the keys and partial sums from workspaces."""
    B, T = inp.shape
    C = dout.shape[-1]
    N = B * T
    assert C % 8 == 0 and dout.flags.c_contiguous
    keys = workspace("encoder_keys", N, np.int64)
    launch("encoder", "encoder_backward_keys", ceil_div(N, block_size), block_size,
           keys, inp, N, T, _row_stride(inp))
    keys.sort()
    segments = ceil_div(N, segment)
    partials = workspace("encoder_partials", 2 * segments * C, np.float32)
    head, tail = partials[:segments * C], partials[segments * C:]
    launch("encoder", "encoder_backward_wte_segments", ceil_div(segments * C // 8, block_size),
           block_size, dwte, head, tail, dout, keys, N, C, segment)
    launch("encoder", "encoder_backward_wte_runs", segments, RUNS_BLOCK,
           dwte, head, tail, keys, N, C, segment)
    launch("encoder", "encoder_backward_wpe", ceil_div(T * C // 8, block_size), block_size,
           dwpe, dout, B, T, C)
