"""AdamW, llm.c's optimizer, over a GPT2's flat parameter and gradient buffers.

It holds what only the optimizer needs: the moments m and v (fp32), fp32 master weights where
the backend stores the params in lower precision (bf16 on the GPU), the step count that the bias
corrections read, and with ZeRO-1 which slice of the flat buffer this rank updates. Written once
for both backends through the ops contract (llmpy/ops.py): the norm, the clip factor and each
tensor's update are ops calls.
"""
import math

import numpy as np

from llmpy.config import DECAYED, PARAM_NAMES, num_parameters, param_shapes


def clip_factor(norm, grad_clip):
    """Gradient clipping's factor for adamw_update's grad_scale: grad_clip / norm where
    0 < grad_clip < norm, else 1 (grad_clip <= 0: no clipping). Both backends' clip_factor and
    clip_scale give this one (the GPU's kernel computes it on the device from the same norm)."""
    return grad_clip / norm if 0 < grad_clip < norm else 1.0


def rounding_seed(seed, step, index, start):
    """The seed of the bf16 stochastic rounding of one piece of a tensor: fresh random bits for
    every step, tensor (`index` in PARAM_NAMES) and slice (`start`, its offset in the flat
    buffer), varied between runs by `seed`."""
    return np.uint32((seed * 7919 + step * len(PARAM_NAMES) + index + start * 2654435761) % 2**32)


def pieces(shapes, lo, hi):
    """(tensor index, name, start, end) of each tensor's part within [lo, hi) of the flat
    buffer: what one update call covers, each with its tensor's weight decay."""
    found, offset = [], 0
    for i, (name, shape) in enumerate(shapes.items()):
        start, end = max(lo, offset), min(hi, offset + math.prod(shape))
        if start < end:
            found.append((i, name, start, end))
        offset += math.prod(shape)
    return found


class AdamW:
    """AdamW (decoupled weight decay, on the matrices only) for `model` (a GPT2), the gradient
    clipped to the global norm grad_clip (0: no clipping). `weights`: the fp32 flat weights the
    model was built from, where the master weights start (the model's own copy may be rounded
    to bf16). `seed` varies the bf16 stochastic rounding between runs."""

    def __init__(self, model, weights, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0,
                 grad_clip=1.0, seed=0):
        self.model, self.ops = model, model.ops
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.grad_clip, self.seed = grad_clip, seed
        xp, comm = self.ops.xp, model.comm
        n, padded = num_parameters(model.cfg), model.params_flat.size
        # ZeRO-1 shards m, v and the master weights: each rank updates one slice of the (padded)
        # flat buffer, then all gather the params; otherwise the update covers all n
        size = padded // comm.world if model.zero else n
        self.shard_start = comm.rank * size if model.zero else 0
        self.m = xp.zeros(size, dtype=np.float32)
        self.v = xp.zeros(size, dtype=np.float32)
        self.master = None
        if self.ops.master_weights:
            flat = np.zeros(padded, dtype=np.float32)
            flat[:n] = weights
            self.master = self.ops.to_device(flat[self.shard_start:self.shard_start + size])
        self.pieces = pieces(param_shapes(model.cfg), self.shard_start, self.shard_start + size)
        self.step = 0           # updates taken (the bias corrections' t)

    def grad_norm(self):
        """Global gradient norm, after the model's reduce_gradients(); with ZeRO-1 each rank
        holds one shard of the gradient, so the squares are summed over the ranks."""
        model = self.model
        if model.zero:
            return math.sqrt(model.comm.sum(self.ops.global_norm_squared(model.comm.shard(model.grads_flat))))
        return math.sqrt(self.ops.global_norm_squared(model.grads_flat))

    def update(self, lr, norm=None):
        """One AdamW step at learning rate lr from the model's gradients; `norm`, the gradient
        norm where the caller has it already. With ZeRO-1 each rank updates its shard, then the
        params are gathered on every rank. Returns the gradient norm."""
        model = self.model
        if norm is None and not model.zero:
            # the norm and the clip factor stay on the device: the update's kernels queue up
            # behind the backward's, and the host reads the norm only once they are all queued
            norm_squared, grad_scale = self.ops.clip_scale(model.grads_flat, self.grad_clip)
        else:
            norm = self.grad_norm() if norm is None else norm
            grad_scale = self.ops.clip_factor(norm, self.grad_clip)
        self.step += 1
        for i, name, start, end in self.pieces:
            wd = self.weight_decay if name in DECAYED else 0.0
            lo, hi = start - self.shard_start, end - self.shard_start
            master = self.master[lo:hi] if self.master is not None else None
            self.ops.adamw_update(model.params_flat[start:end], model.grads_flat[start:end],
                                  self.m[lo:hi], self.v[lo:hi], master, lr, self.beta1, self.beta2,
                                  self.eps, wd, self.step, grad_scale,
                                  rounding_seed(self.seed, self.step, i, start))
        if model.zero:
            model.comm.all_gather(model.params_flat)
        return norm if norm is not None else math.sqrt(float(norm_squared))

    def params_fp32(self):
        """The weights as a host fp32 flat array: the master copy where there is one (with
        ZeRO-1 gathered from every rank's shard: then every rank must call this)."""
        model, ops = self.model, self.ops
        n = num_parameters(model.cfg)
        if self.master is None:
            return ops.to_host(model.params_flat[:n]).astype(np.float32)
        if not model.zero:
            return ops.to_host(self.master).astype(np.float32)
        full = ops.xp.zeros(model.params_flat.size, dtype=np.float32)
        model.comm.shard(full)[...] = self.master
        model.comm.all_gather(full)
        return ops.to_host(full[:n])
