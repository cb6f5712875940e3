"""Launcher for the fused classifier, kernels/classifier.cu: softmax cross-entropy loss and its
gradient, written in place into the logits buffer. One block per (b, t) row."""
import math

import numpy as np

from llmpy.cuda.runtime import launch

BLOCK = 256      # measured fastest of 256/512/1024 on the H200 (dev/cuda/classifier.py)


def classifier_forward_backward(logits, losses, targets, V, dloss, block=BLOCK):
    """losses[b,t] = -log softmax(logits[b,t,:V])[target]; logits <- dloss * (p - onehot),
    padded columns V..Vp <- 0. targets may be a (b, t) slice of a larger (B, T) buffer."""
    *bt, Vp = logits.shape
    B, T = targets.shape
    assert tuple(bt) == (B, T) == losses.shape, f"logits {logits.shape}, targets {targets.shape}"
    assert 0 < V <= Vp and Vp % 8 == 0, "rows are read in 128-bit packets of 8 bf16"
    assert logits.flags.c_contiguous and logits.data.ptr % 16 == 0 and losses.flags.c_contiguous
    assert targets.dtype == np.int32 and targets.strides[1] == 4
    launch("classifier", "classifier_forward_backward", math.prod(bt), block,
           logits, losses, targets, T, targets.strides[0] // 4, V, Vp, np.float32(dloss))
