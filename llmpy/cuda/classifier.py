"""Launcher for the fused classifier, kernels/classifier.cu: softmax cross-entropy loss and its
gradient, written in place into the logits buffer. One block per (b, t) row, the row kept in
shared memory between the kernel's two passes."""
import functools
import math

import cupy as cp
import numpy as np

from llmpy.cuda.runtime import ceil_div, kernel, launch

BLOCK = 512      # two blocks of 512 per SM, each holding a row (dev/cuda/classifier.py sweeps it)
PACKET = 16      # bytes: 8 bf16, the kernel's unit of access
STATIC_SHARED = 1024   # bytes, at least the kernel's own (block_max's and block_sum's partials)


@functools.cache
def row_cache_capacity():
    """How many 16-byte packets of a row the kernel may keep in shared memory: as many as let two
    blocks share an SM (H100/H200: 228 KB per SM, 7,168 packets; GPT-2's 50,257 columns are
    6,283)."""
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    per_block = (props["sharedMemPerMultiprocessor"] // 2 - props["reservedSharedMemPerBlock"]
                 - STATIC_SHARED)
    packets = min(per_block, props["sharedMemPerBlockOptin"] - STATIC_SHARED) // PACKET
    # as much of L1 as shared memory as there can be: the kernel reuses nothing through L1
    # (launch() raises the kernel's dynamic shared memory limit to what it is given)
    kernel("classifier", "classifier_forward_backward").preferred_shared_memory_carveout = 100
    return packets


def classifier_forward_backward(logits, losses, targets, V, dloss, block=BLOCK, cached=None):
    """losses[b,t] = -log softmax(logits[b,t,:V])[target]; logits <- dloss * (p - onehot),
    padded columns V..Vp <- 0. targets may be a (b, t) slice of a larger (B, T) buffer.
    `cached`: packets of each row kept in shared memory (default: the whole row where it fits);
    the rest is read twice from global memory."""
    *bt, Vp = logits.shape
    B, T = targets.shape
    assert tuple(bt) == (B, T) == losses.shape, f"logits {logits.shape}, targets {targets.shape}"
    assert 0 < V <= Vp and Vp % 8 == 0, "rows are read in 128-bit packets of 8 bf16"
    assert logits.flags.c_contiguous and logits.data.ptr % 16 == 0 and losses.flags.c_contiguous
    assert targets.dtype == np.int32 and targets.strides[1] == 4
    capacity = row_cache_capacity()
    cached = min(ceil_div(V, 8), capacity if cached is None else cached)
    assert 0 <= cached <= capacity
    launch("classifier", "classifier_forward_backward", math.prod(bt), block,
           logits, losses, targets, T, targets.strides[0] // 4, V, Vp, np.float32(dloss), cached,
           shared_mem=cached * PACKET)
