"""Launcher for the fused classifier, kernels/classifier.cu: softmax cross-entropy loss and its
gradient, written in place into the logits buffer. One block per (b, t) row, the row kept in
shared memory between the kernel's two passes."""
import functools
import math

import numpy as np

from llmpy.cuda.runtime import ceil_div, kernel, launch, shared_limits
from llmpy.launch_config import CLASSIFIER_BLOCK, PACKET, classifier_row_packets

KERNEL = ("classifier", "classifier_forward_backward")


@functools.cache
def row_cache_capacity():
    """How many 16-byte packets of a row the kernel may keep in shared memory
    (launch_config.classifier_row_packets)."""
    function = kernel(*KERNEL)
    # as much of L1 as shared memory as there can be: the kernel reuses nothing through L1
    function.preferred_shared_memory_carveout = 100
    return classifier_row_packets(shared_limits(), function.shared_size_bytes)


def classifier_forward_backward(logits, losses, targets, V, dloss, block=CLASSIFIER_BLOCK, cached=None):
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
    launch(*KERNEL, math.prod(bt), block,
           logits, losses, targets, T, targets.strides[0] // 4, V, Vp, np.float32(dloss), cached,
           shared_mem=cached * PACKET)
