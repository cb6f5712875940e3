"""Encoder (token + position embedding) kernels, each version checked against llmpy.cpu and timed
at GPT-2 124M shapes.  python dev/cuda/encoder.py [version...]

  1  forward: one thread per (position, 8 channels)                       kernels/encoder.cu
  2  backward: one thread per (token's run, 8 channels) sums the run      dev/cuda/encoder.cu
  3  backward: runs cut into segments of 32 sorted positions, so a        kernels/encoder.cu
     frequent token's thousands of rows are summed by many threads

Tokens are drawn from a Zipf-like law (p ~ 1/(rank + 3): the commonest ~3% of a batch, as
"the" or "," in English text), which is what makes the backward's runs long. GB/s counts the
bytes the kernels must move: the backward reads dout twice (the dwte and the dwpe pass) and
reads and writes the dwte rows of the tokens present and dwpe.
"""
import functools

import cupy as cp
import numpy as np
from common import (bf16, dev_module, gpu, host, median_ms, poisoned, print_table, randn, rel_error,
                    selected_versions)

from llmpy import cpu
from llmpy.cuda import encoder
from llmpy.cuda.runtime import ceil_div, launch, workspace

V, Vp, maxT, T, C = 50257, 50304, 1024, 1024, 768
TOL = 1e-2   # bf16 outputs: 8-bit significand, rounding error <= 2^-8 = 4e-3 of a value


def tokens(rng, B, T):
    p = 1.0 / (np.arange(V) + 3.0)
    return rng.choice(V, size=(B, T), p=p / p.sum()).astype(np.int32)


@functools.cache
def dev_kernel(name):
    return dev_module("encoder").get_function(name)


def backward_v2(dwte, dwpe, dout, inp, block_size=256):
    B, T = inp.shape
    N = B * T
    keys = workspace("encoder_keys", N, np.int64)
    launch("encoder", "encoder_backward_keys", ceil_div(N, 256), 256, keys, inp, N, T, T)
    keys.sort()
    dev_kernel("encoder_backward_wte_v1")(
        (ceil_div(N * C // 8, block_size),), (block_size,),
        (dwte, dout, keys, np.int32(N), np.int32(C)))
    launch("encoder", "encoder_backward_wpe", ceil_div(T * C // 8, 256), 256, dwpe, dout, B, T, C)


# version: (op, function)
VERSIONS = {1: ("forward", encoder.encoder_forward),
            2: ("backward", backward_v2),
            3: ("backward", encoder.encoder_backward)}


def check(op, fn, rng, B, T):
    inp = tokens(rng, B, T)
    if op == "forward":
        wte, wpe = randn(rng, Vp, C), randn(rng, maxT, C)
        ref = np.empty((B, T, C), np.float32)
        cpu.encoder_forward(ref, inp, wte, wpe)
        out = poisoned(B, T, C)
        fn(out, cp.asarray(inp), gpu(wte), gpu(wpe))
        return {"out": rel_error(host(out), ref)}
    dout = randn(rng, B, T, C)
    dwte, dwpe = randn(rng, Vp, C), randn(rng, maxT, C)   # accumulated into: prefilled
    ref_dwte, ref_dwpe = dwte.copy(), dwpe.copy()
    cpu.encoder_backward(ref_dwte, ref_dwpe, dout, inp)
    g_dwte, g_dwpe = gpu(dwte), gpu(dwpe)
    fn(g_dwte, g_dwpe, gpu(dout), cp.asarray(inp))
    return {"dwte": rel_error(host(g_dwte), ref_dwte), "dwpe": rel_error(host(g_dwpe), ref_dwpe)}


def main():
    picked = selected_versions(VERSIONS)
    rng = np.random.default_rng(0)
    for v in picked:
        op, fn = VERSIONS[v]
        errors = check(op, fn, rng, 4, T)
        worst = max(errors.values())
        print(f"version {v} ({op}): " + ", ".join(f"{k} {e:.2e}" for k, e in errors.items())
              + ("  OK" if worst <= TOL else "  FAILED"))
    Bmax = 64
    inp_all = cp.asarray(tokens(rng, Bmax, T))
    dout_all = gpu(randn(rng, Bmax, T, C))
    wte, wpe = gpu(randn(rng, Vp, C, scale=0.02)), gpu(randn(rng, maxT, C, scale=0.02))
    out_all = poisoned(Bmax, T, C)
    dwte, dwpe = cp.zeros((Vp, C), bf16), cp.zeros((maxT, C), bf16)
    rows = []
    for v in picked:
        op, fn = VERSIONS[v]
        for B in (8, 64):
            inp, dout, out = inp_all[:B], dout_all[:B], out_all[:B]
            N = B * T
            if op == "forward":
                nbytes = 2 * N * C * 2 + T * C * 2 + N * 4
            else:
                present = int(cp.unique(inp).size)
                nbytes = 2 * N * C * 2 + 2 * present * C * 2 + 2 * T * C * 2 + N * 4
            for block in (128, 256, 512, 1024):
                if op == "forward":
                    ms = median_ms(lambda: fn(out, inp, wte, wpe, block_size=block))
                else:
                    ms = median_ms(lambda: fn(dwte, dwpe, dout, inp, block_size=block))
                rows.append((v, op, B, block, f"{ms:.4f}", f"{nbytes / ms / 1e6:.0f}"))
    print_table(rows, ["version", "op", "B", "block", "ms", "GB/s"])


if __name__ == "__main__":
    main()
