"""matmul forward and backward: cuBLAS gemms, bf16 in and out with fp32 accumulation
(llmpy/cuda/matmul.py), and the bias kernels (kernels/matmul.cu; earlier: dev/cuda/matmul.cu).

    python dev/cuda/matmul.py [version...]     # check against llmpy/cpu.py, then time

Forward versions (the gemm is cuBLAS's in both; they differ in how the bias gets in):
  1  the gemm, then a bias-add kernel over out (llm.c's first version): out is read and written
     once more after the gemm, and rounded to bf16 twice
  2  llmpy/cuda/matmul.py: the bias broadcast into out, then the gemm with beta = 1, whose
     epilogue reads it while the gemm is compute-bound: one pass over out less, one rounding
Backward (one version): the dinp and dweight gemms, and dbias as a deterministic two-pass column
sum, timed alone per rows_per_chunk (its block-size-like knob).
Shapes: GPT-2 124M's four matmuls at B*T = 65536 rows, and the LM head (Vp = 50304, no bias).
TFLOP/s counts 2*N*C*OC per gemm (forward one, backward two); GPU_NOTES has cuBLAS alone at
~630-770 on the H200. torch.addmm/matmul run on the same tensors where torch is installed.
"""
import functools

import cupy as cp
import numpy as np
from common import (bf16, dev_module, gpu, host, poisoned, print_table, randn, rel_error,
                    selected_versions, time_ms)

from llmpy import cpu
from llmpy.cuda import matmul
from llmpy.cuda.matmul import OP_N, OP_T, gemm
from llmpy.cuda.runtime import ceil_div

N = 64 * 1024         # B*T rows, timed
CHECK_N = 2 * 128     # rows checked against NumPy
C, Vp = 768, 50304
SHAPES = [("qkv", C, 3 * C, True), ("attproj", C, C, True), ("fc", C, 4 * C, True),
          ("fcproj", 4 * C, C, True), ("lm_head", C, Vp, False)]   # (name, C in, OC out, bias)
ROWS_PER_CHUNK = (64, 128, 256, 512, 1024)
# bf16 outputs of fp32 dot products: one rounding, <= 2^-8 of each value; 1e-2 of the tensor's
# scale clears that, while a wrong transpose or a missed bias is off by O(1)
TOL = 1e-2


@functools.cache
def v1_kernel():
    return dev_module("matmul").get_function("add_bias_v1")


def forward_v1(out, inp, weight, bias):
    OC, C_ = weight.shape
    rows = inp.size // C_
    gemm(OP_T, OP_N, OC, rows, C_, weight, C_, inp, C_, out, OC)
    if bias is not None:
        v1_kernel()((ceil_div(rows * OC // 8, 512),), (512,),
                    (out, bias, np.int32(rows), np.int32(OC)))


VERSIONS = {1: forward_v1, 2: matmul.matmul_forward}


def check_forward(rng, forward):
    errors = {}
    for name, c, oc, has_bias in SHAPES:
        inp, weight, bias = randn(rng, CHECK_N, c), randn(rng, oc, c), randn(rng, oc)
        ref = np.empty((CHECK_N, oc), dtype=np.float32)
        cpu.matmul_forward(ref, inp, weight, bias if has_bias else None)
        out = poisoned(CHECK_N, oc)
        forward(out, gpu(inp), gpu(weight), gpu(bias) if has_bias else None)
        errors[f"{name} out"] = rel_error(host(out), ref)
    return errors


def check_backward(rng):
    errors = {}
    for name, c, oc, has_bias in SHAPES:
        dout, inp, weight = randn(rng, CHECK_N, oc), randn(rng, CHECK_N, c), randn(rng, oc, c)
        dweight, dbias = randn(rng, oc, c), randn(rng, oc)      # accumulated into
        d_dinp, d_dweight, d_dbias = poisoned(CHECK_N, c), gpu(dweight), gpu(dbias)
        matmul.matmul_backward(d_dinp, d_dweight, d_dbias if has_bias else None,
                               gpu(dout), gpu(inp), gpu(weight))
        dinp = np.empty((CHECK_N, c), dtype=np.float32)
        cpu.matmul_backward(dinp, dweight, dbias if has_bias else None, dout, inp, weight)
        errors[f"{name} dinp"] = rel_error(host(d_dinp), dinp)
        errors[f"{name} dweight"] = rel_error(host(d_dweight), dweight)
        if has_bias:
            errors[f"{name} dbias"] = rel_error(host(d_dbias), dbias)
    return errors


def tiled(rng, rows, cols):
    """(rows, cols) bf16: 1024 random rows repeated (gemm speed does not depend on the values,
    and NumPy would take minutes to draw the LM head's 3.3G)."""
    unique = gpu(randn(rng, 1024, cols)).view(np.uint16)
    out = cp.empty((rows // 1024, 1024, cols), dtype=np.uint16)
    out[...] = unique
    return out.reshape(rows, cols).view(bf16)


def torch_view(a):
    import torch
    return torch.from_dlpack(a.view(np.int16)).view(torch.bfloat16)


def torch_times(inp, weight, bias, out, dout, dinp, dweight, dbias):
    """torch forward (addmm with bias, matmul without) and backward (matmul, addmm_, sum) on the
    same tensors; None where torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    x, w, y, dy, dx, dw = map(torch_view, (inp, weight, out, dout, dinp, dweight))
    b = torch_view(bias) if bias is not None else None
    db = torch_view(dbias) if dbias is not None else None

    def forward():
        if b is None:
            torch.matmul(x, w.t(), out=y)
        else:
            torch.addmm(b, x, w.t(), out=y)

    def backward():
        torch.matmul(dy, w, out=dx)
        dw.addmm_(dy.t(), x)
        if db is not None:
            db.add_(dy.sum(0))
    return time_ms(forward), time_ms(backward)


def verdict(err):
    return "ok" if err < TOL else "FAIL"


def tflops(flops, ms):
    return f"{flops / ms / 1e9:.0f}"


def main():
    rng = np.random.default_rng(0)
    versions = selected_versions(VERSIONS)
    for version in versions:
        for name, err in check_forward(rng, VERSIONS[version]).items():
            print(f"version {version} forward {name}: relative error {err:.2e} {verdict(err)}")
    for name, err in check_backward(rng).items():
        print(f"backward {name}: relative error {err:.2e} {verdict(err)}")

    rows = []
    for name, c, oc, has_bias in SHAPES:
        inp, dout = tiled(rng, N, c), tiled(rng, N, oc)
        weight, dweight = gpu(randn(rng, oc, c)), gpu(randn(rng, oc, c))
        bias = gpu(randn(rng, oc)) if has_bias else None
        dbias = gpu(randn(rng, oc)) if has_bias else None
        out, dinp = cp.empty((N, oc), dtype=bf16), cp.empty((N, c), dtype=bf16)
        flops = 2 * N * c * oc
        shape = f"{N}x{c} @ {c}x{oc}"
        for version in versions:
            ms = time_ms(lambda: VERSIONS[version](out, inp, weight, bias))
            rows.append((name, shape, "forward", version, f"{ms:.3f}", tflops(flops, ms)))
        ms = time_ms(lambda: matmul.matmul_backward(dinp, dweight, dbias, dout, inp, weight))
        rows.append((name, shape, "backward", "-", f"{ms:.3f}", tflops(2 * flops, ms)))
        reference = torch_times(inp, weight, bias, out, dout, dinp, dweight, dbias)
        if reference:
            fwd, bwd = reference
            rows.append((name, shape, "forward", "torch", f"{fwd:.3f}", tflops(flops, fwd)))
            rows.append((name, shape, "backward", "torch", f"{bwd:.3f}", tflops(2 * flops, bwd)))
    print(f"\nB*T = {N} rows; TFLOP/s of the gemms (bias work included in the time)")
    print_table(rows, ["matmul", "shape", "pass", "version", "ms", "TFLOP/s"])

    rows = []
    for name, oc in [("qkv", 3 * C), ("fc", 4 * C), ("fcproj", C)]:
        dout, dbias = tiled(rng, N, oc), gpu(randn(rng, oc))
        for chunk in ROWS_PER_CHUNK:
            ms = time_ms(lambda: matmul.bias_backward(dbias, dout, rows_per_chunk=chunk))
            rows.append((name, f"{N}x{oc}", chunk, f"{ms:.4f}", f"{dout.nbytes / ms / 1e6:.0f}"))
    print("\ndbias alone (GB/s: dout read once)")
    print_table(rows, ["matmul", "dout", "rows_per_chunk", "ms", "GB/s"])


if __name__ == "__main__":
    main()
