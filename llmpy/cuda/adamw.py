"""Launchers for the optimizer: kernels/global_norm.cu (the gradient norm, in two deterministic
phases, and the clip factor from it) and kernels/adamw.cu (the AdamW update of one tensor,
stochastic rounding to bf16)."""
import cupy as cp
import ml_dtypes
import numpy as np

from llmpy import optim
from llmpy.cuda.runtime import ceil_div, launch, workspace

# a fixed grid, not one sized to the device, so the norm's bits are the same on every GPU; on an
# H100/H200 (132 SMs x 8 blocks of 256) it is a single wave
NORM_BLOCKS, NORM_BLOCK = 1024, 256
ADAMW_BLOCK = 256    # the fastest of 256, 512, 1024 (dev/cuda/adamw.py, docs/performance.md)


def _aligned(*arrays):
    return all(a.flags.c_contiguous and a.data.ptr % 16 == 0 for a in arrays)


def global_norm_squared(grads):
    """Sum of squares of the flat bf16 gradient buffer, as a Python float (one device read)."""
    norm_squared, _ = clip_scale(grads, 0.0)
    return float(norm_squared)


def clip_scale(grads, grad_clip):
    """The squared global norm of the flat bf16 gradient buffer and AdamW's clip factor
    (grad_clip / norm where 0 < grad_clip < norm, else 1), as device scalars (fp64, fp32) in
    workspaces that the next call overwrites: nothing waits for the GPU, so the update's kernels
    queue up behind the backward's."""
    n = grads.size
    assert grads.dtype == ml_dtypes.bfloat16 and _aligned(grads) and n < 2**31
    partials = workspace("global_norm_partials", NORM_BLOCKS, np.float32)
    total = workspace("global_norm_total", 1, np.float64).reshape(())
    scale = workspace("global_norm_clip_scale", 1, np.float32).reshape(())
    launch("global_norm", "global_norm_squared_partials", NORM_BLOCKS, NORM_BLOCK,
           partials, grads, n)
    launch("global_norm", "global_norm_squared_total", 1, 32, total, scale, partials, NORM_BLOCKS,
           np.float64(grad_clip))
    return total, scale


def scalar(x):
    """x as an fp32 device scalar, for adamw_update's grad_scale (written by a kernel: no sync)."""
    return cp.full((), x, dtype=np.float32)


def clip_factor(norm, grad_clip):
    """The optimizer's clip factor from a norm the host has, as a device scalar for adamw_update."""
    return scalar(optim.clip_factor(norm, grad_clip))


def adamw_update(param, grad, m, v, master, lr, beta1, beta2, eps, weight_decay, step,
                 grad_scale, seed, block=ADAMW_BLOCK):
    """One AdamW step on one tensor: master (fp32) and m, v updated in place, the bf16 param
    written from the new master with stochastic rounding; without master, the bf16 param is
    updated from itself. grad_scale: an fp32 device scalar (clip_scale's or clip_factor's) or
    a float. `seed` (0 <= seed < 2**32) should differ per step and per tensor."""
    n, beta1, beta2 = param.size, float(beta1), float(beta2)    # bias corrections in fp64
    arrays = (param, grad, m, v) + (() if master is None else (master,))
    assert all(a.size == n for a in arrays) and _aligned(*arrays)
    assert n % 8 == 0 and n < 2**31 - 8 * block, "each thread updates 8 elements, 4 at a time"
    f32 = np.float32
    if not isinstance(grad_scale, cp.ndarray):
        grad_scale = scalar(grad_scale)
    launch("adamw", "adamw_update", ceil_div(n // 8, block), block,
           param, grad, m, v, master, n,
           f32(lr), f32(beta1), f32(beta2), f32(1.0 - beta1), f32(1.0 - beta2),
           f32(1.0 / (1.0 - beta1 ** step)), f32(1.0 / (1.0 - beta2 ** step)),
           f32(eps), f32(weight_decay), grad_scale, np.uint32(seed))
