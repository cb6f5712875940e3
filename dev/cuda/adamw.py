"""The optimizer: the squared global gradient norm (kernels/global_norm.cu) and the AdamW update
with stochastic rounding to bf16 (kernels/adamw.cu).

    python dev/cuda/adamw.py [version...]   # check against llmpy/cpu.py, then time at GPT-2 124M

The norm (both versions): a fixed grid of 1024 blocks summing squares in fp32 over 128-bit
packets, the block sums added in fp64 by one warp. AdamW, one launch per tensor:
  1  one thread per 8 elements, 128-bit accesses; the compiler cannot move the second half's
     loads above the first half's stores (the pointers may alias), so few bytes are in flight
                                                                          dev/cuda/adamw.cu
  2  __restrict__ pointers and all of a thread's loads (2 quads of 4 elements) issued before any
     arithmetic; each warp access 512 contiguous bytes of fp32 or 256 of bf16 (64-bit bf16
     accesses); streaming hints on every access. The same bits as version 1   kernels/adamw.cu
Both are memory-bound: GB/s against the ~4.3 TB/s copy rate. AdamW moves 28 bytes per parameter
with fp32 master weights (grad 2; m, v, master read and written, 24; param written, 2), 22
without (param read and written, grad, m, v).
"""
import functools

import cupy as cp
import numpy as np
from common import (bf16, dev_module, gpu, median_ms, print_table, randn, rel_error,
                    selected_versions)

from llmpy import cpu
from llmpy.config import from_descriptor, num_parameters, param_shapes
from llmpy.cuda.adamw import adamw_update, global_norm_squared, scalar
from llmpy.cuda.runtime import NULL, ceil_div
from llmpy.gpt2 import split_flat

CHECK_N = (1 << 20) + 8        # checked against NumPy; + 8: the last block is not full
BLOCKS = (256, 512, 1024)
HYPER = dict(lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_scale=0.8)
# the norm: fp32 partial sums against fp64; AdamW: the same fp32 formulas up to an ulp or two
TOL = {"norm": 1e-5, "master": 1e-6, "m": 1e-6, "v": 1e-6}


@functools.cache
def v1_kernel():
    return dev_module("adamw").get_function("adamw_update_v1")


def adamw_v1(param, grad, m, v, master, lr, beta1, beta2, eps, weight_decay, step, grad_scale,
             seed, block=1024):
    """Version 1, launched as llmpy/cuda/adamw.py launched it."""
    n, f32 = param.size, np.float32
    v1_kernel()((ceil_div(n // 8, block),), (block,),
                (param, grad, m, v, NULL if master is None else master, np.int32(n), f32(lr),
                 f32(beta1), f32(beta2), f32(1.0 - beta1), f32(1.0 - beta2),
                 f32(1.0 / (1.0 - beta1 ** step)), f32(1.0 / (1.0 - beta2 ** step)), f32(eps),
                 f32(weight_decay), f32(grad_scale), np.uint32(seed)))


# (norm, AdamW launcher, the clip factor as the launcher takes it: version 2's kernel reads it
# from device memory, where the model's norm leaves it)
VERSIONS = {1: (global_norm_squared, adamw_v1, float),
            2: (global_norm_squared, adamw_update, scalar)}


def check_inputs(rng):
    """Gradients, and fp32 master weights (not bf16 values), m, v partway through training."""
    grads = randn(rng, CHECK_N, scale=1e-2)
    master = randn(rng, CHECK_N, scale=0.02) + randn(rng, CHECK_N, scale=1e-5)
    m, v = randn(rng, CHECK_N, scale=1e-3), randn(rng, CHECK_N, scale=1e-3) ** 2
    return grads, master, m, v


def check(inputs, norm_fn, adamw_fn, hyper):
    """Errors against NumPy, whether the params are bf16 neighbours of their master, and the
    outputs' bits (param, master, m, v)."""
    grads, master, m, v = (a.copy() for a in inputs)
    ref = cpu.global_norm_squared(grads)
    errors = {"norm": abs(norm_fn(gpu(grads)) - ref) / ref}
    d_param = gpu(master)
    d_master, d_m, d_v = (gpu(a, np.float32) for a in (master, m, v))
    adamw_fn(d_param, gpu(grads), d_m, d_v, d_master, **hyper, step=5, seed=1)
    cpu.adamw_update(master, grads, m, v, None, **HYPER, step=5, seed=1)
    for name, ours, ref in [("master", d_master, master), ("m", d_m, m), ("v", d_v, v)]:
        errors[name] = rel_error(cp.asnumpy(ours), ref)
    # stochastic rounding: each param is its new master rounded toward or away from zero
    toward = cp.asnumpy(d_master).view(np.uint32) & np.uint32(0xFFFF0000)
    bits = cp.asnumpy(d_param).view(np.uint16).astype(np.uint32) << 16
    neighbours = np.all((bits == toward) | (bits == toward + np.uint32(0x10000)))
    outputs = [cp.asnumpy(a).view(np.uint8) for a in (d_param, d_master, d_m, d_v)]
    return errors, neighbours, outputs


def tiled(rng, n, scale, dtype):
    """n random values: a random million, repeated (the kernels' speed is data-blind)."""
    return cp.asarray(np.resize(randn(rng, 1 << 20, scale=scale).astype(dtype), n))


def main():
    rng = np.random.default_rng(0)
    cfg = from_descriptor("d12")
    n, shapes = num_parameters(cfg), param_shapes(cfg)
    inputs, first = check_inputs(rng), None
    for version in selected_versions(VERSIONS):
        norm_fn, adamw_fn, clip_factor = VERSIONS[version]
        hyper = dict(HYPER, grad_scale=clip_factor(HYPER["grad_scale"]))
        errors, neighbours, outputs = check(inputs, norm_fn, adamw_fn, hyper)
        for name, err in errors.items():
            print(f"version {version} {name}: relative error {err:.2e} "
                  f"{'ok' if err < TOL[name] else 'FAIL'}")
        print(f"version {version} bf16 params are bf16 neighbours of their master: "
              f"{'ok' if neighbours else 'FAIL'}")
        if first is None:
            first = version, outputs
        else:
            same = all(np.array_equal(a, b) for a, b in zip(first[1], outputs))
            print(f"version {version} param, master, m, v bits equal version {first[0]}'s: "
                  f"{'ok' if same else 'FAIL'}")

        param, grad = tiled(rng, n, 0.02, bf16), tiled(rng, n, 1e-2, bf16)
        master, m = tiled(rng, n, 0.02, np.float32), tiled(rng, n, 1e-3, np.float32)
        v = tiled(rng, n, 1e-3, np.float32) ** 2
        views = [split_flat(a, shapes) for a in (param, grad, m, v, master)]

        def step(block, with_master):
            """The model's update: one launch per tensor, a seed for each."""
            for i, name in enumerate(shapes):
                p, g, mi, vi, mw = (view[name] for view in views)
                adamw_fn(p, g, mi, vi, mw if with_master else None, **hyper, step=10, seed=i,
                         block=block)

        ms = median_ms(lambda: norm_fn(grad))
        rows = [(version, "global norm, with its read-back", "1024 x 256", f"{ms:.3f}",
                 f"{2 * n / ms / 1e6:.0f}")]
        for with_master, nbytes in [(True, 28 * n), (False, 22 * n)]:
            what = f"AdamW, 16 tensors, {'fp32 master' if with_master else 'no master'}"
            for block in BLOCKS:
                ms = median_ms(lambda: step(block, with_master))
                rows.append((version, what, block, f"{ms:.3f}", f"{nbytes / ms / 1e6:.0f}"))
        print(f"\nGPT-2 124M: {n:,} parameters")
        print_table(rows, ["version", "kernel", "block", "ms", "GB/s"])


if __name__ == "__main__":
    main()
