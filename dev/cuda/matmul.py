"""matmul forward and backward: cuBLASLt with its epilogues, bf16 in and out with fp32
accumulation (llmpy/cuda/matmul.py, llmpy/cuda/cublaslt.py); the earlier versions on cuBLAS's
gemm and bias kernels of ours (dev/cuda/matmul.cu).

    python dev/cuda/matmul.py [version...] [--C 768] [--N 65536]   # check, then time

--C and --N set the model width and B*T (GPT-2 124M at B=64 unless given; d24 is --C 1024).

Forward, out = inp @ W^T + bias, at every shape (they differ in how the bias gets in):
  1  the gemm, then a bias-add kernel over out (llm.c's first version): out is read and written
     once more after the gemm, and rounded to bf16 twice
  2  the bias broadcast into out, then the gemm with beta = 1, whose epilogue reads it while the
     gemm is compute-bound: one pass over out less, one rounding
  3  llmpy/cuda/matmul.py: cuBLASLt's bias epilogue adds the bias vector to the fp32
     accumulator: out is written once and never read (2 writes it twice and reads it once)
The fc matmul and its GELU, fch = inp @ W^T + bias, fch_gelu = gelu(fch), at the fc shape:
  4  version 3, then the gelu_forward kernel: a second pass reads fch back (400 MB at
     B*T = 65536) and writes fch_gelu
  5  llmpy/cuda/matmul.py's matmul_gelu_forward: cuBLASLt's GELU_AUX_BIAS epilogue writes fch
     and fch_gelu straight from the accumulator: one read of fch and one kernel less
The fcproj backward through the GELU, dfch = (dout @ W) * gelu'(fch), with dW and dbias:
  6  the backward, then the gelu_backward kernel in place: dinp is written, read back with fch
     and written again
  7  llmpy/cuda/matmul.py's gelu_matmul_backward: cuBLASLt's DGELU epilogue reads fch and
     multiplies by gelu'(fch) before dinp is stored: dinp written once (800 MB less traffic),
     one kernel less
Backward at every shape, dinp = dout @ W, dW += dout^T inp, dbias += column sums of dout:
  8  llmpy/cuda/matmul.py: cuBLASLt for dinp and dW (split-K allowed, parts summed in fp32),
     dbias by two kernels of ours (a deterministic two-pass column sum, timed alone per
     rows_per_chunk, its block-size-like knob): dout is read once more, 906 MB per layer at
     d12, B*T = 65536
  9  dW by cuBLASLt with the BGRADB epilogue, which sums dout's columns from the tiles the
     product loads anyway, into a bf16 vector (cuBLASLt refuses fp32 there) that a small kernel
     adds to dbias (the epilogue overwrites; dbias accumulates over micro-steps). Slower than 8:
     the epilogue costs the product more than our kernels' pass over dout
fc's bias gradient (the column sums of dfch, the fcproj backward's dinp):
 10  cuBLASLt's DGELU_BGRAD epilogue sums dfch's rows while the dinp product writes it, into a
     vector that a small kernel adds to dbias, against version 7 and our dbias kernel over dfch
The dweight product alone: cuBLAS's gemm against cuBLASLt under each split-K reduction mask,
with and without BGRADB. cuBLASLt's ranked algorithms: each product at each shape (and fcproj's
dinp with the DGELU epilogue, as the model runs it) timed with the heuristic's first few choices
(llmpy takes the first), to see what it leaves on the table.
Shapes: GPT-2's four matmuls at width C and B*T = N rows, and the LM head (Vp = 50304, no bias).
TFLOP/s counts 2*N*C*OC per gemm (forward one, backward two); docs/performance.md has cuBLAS alone at
~630-770 on the H200. torch.addmm/matmul run on the same tensors where torch is installed.
"""
import functools
import sys

import cupy as cp
import numpy as np
from common import (bf16, dev_module, gpu, host, median_ms, poisoned, print_table, randn, rel_error,
                    selected_versions)

from llmpy import cpu
from common import OP_N, OP_T, gemm

from llmpy.cuda import cublaslt, elementwise, matmul
from llmpy.cuda.runtime import ceil_div, workspace



def option(name, default):
    """--name value on the command line, taken out of sys.argv (the rest are versions)."""
    if name not in sys.argv:
        return default
    at = sys.argv.index(name)
    value = int(sys.argv[at + 1])
    del sys.argv[at:at + 2]
    return value


N = option("--N", 64 * 1024)      # B*T rows, timed
C = option("--C", 768)
CHECK_N = 2 * 128     # rows checked against NumPy
Vp = 50304
SHAPES = [("qkv", C, 3 * C, True), ("attproj", C, C, True), ("fc", C, 4 * C, True),
          ("fcproj", 4 * C, C, True), ("lm_head", C, Vp, False)]   # (name, C in, OC out, bias)
GELU_INPUT = "fcproj"             # the matmul whose dinp goes through GELU's backward
ROWS_PER_CHUNK = (64, 128, 256, 512, 1024)
CHOICES = 4                       # cuBLASLt heuristic's algorithms timed per product
# bf16 outputs of fp32 dot products: one rounding, <= 2^-8 of each value; 1e-2 of the tensor's
# scale clears that, while a wrong transpose or a missed bias is off by O(1)
TOL = 1e-2


@functools.cache
def dev_kernel(name):
    return dev_module("matmul").get_function(name)


def forward_v1(out, inp, weight, bias):
    OC, C_ = weight.shape
    rows = inp.size // C_
    gemm(OP_T, OP_N, OC, rows, C_, weight, C_, inp, C_, out, OC)
    if bias is not None:
        dev_kernel("add_bias_v1")((ceil_div(rows * OC // 8, 512),), (512,),
                                  (out, bias, np.int32(rows), np.int32(OC)))


def forward_v2(out, inp, weight, bias):
    OC, C_ = weight.shape
    rows = inp.size // C_
    if bias is not None:
        dev_kernel("bias_broadcast_v2")((ceil_div(rows * OC // 8, 512),), (512,),
                                        (out, bias, np.int32(rows), np.int32(OC)))
    gemm(OP_T, OP_N, OC, rows, C_, weight, C_, inp, C_, out, OC, accumulate=bias is not None)


def fc_gelu_v4(out, pre_gelu, inp, weight, bias):
    matmul.matmul_forward(pre_gelu, inp, weight, bias)
    elementwise.gelu_forward(out, pre_gelu)


def fcproj_backward_v6(dinp, dweight, dbias, dout, inp, weight, pre_gelu):
    matmul.matmul_backward(dinp, dweight, dbias, dout, inp, weight)
    elementwise.gelu_backward(dinp, pre_gelu, dinp)


def backward_v9(dinp, dweight, dbias, dout, inp, weight):
    OC, C_ = weight.shape
    rows = inp.size // C_
    cublaslt.matmul(OP_N, OP_N, C_, rows, OC, weight, C_, dout, OC, dinp, C_)
    if dbias is None:
        cublaslt.matmul(OP_N, OP_T, C_, OC, rows, inp, C_, dout, OC, dweight, C_, accumulate=True)
        return
    sums = workspace("matmul_bgradb_sums", OC, bf16)
    cublaslt.matmul(OP_N, OP_T, C_, OC, rows, inp, C_, dout, OC, dweight, C_,
                    cublaslt.EPILOGUE_BGRADB, sums, accumulate=True)
    dev_kernel("bias_accumulate")((ceil_div(OC, 256),), (256,), (dbias, sums, np.int32(OC)))


def fcproj_backward_v10(dinp, dweight, dbias, dout, inp, weight, pre_gelu, fc_dbias):
    """Version 7, with fc's bias gradient (dinp's column sums) from the dinp product's epilogue."""
    OC, C_ = weight.shape
    rows = inp.size // C_
    matmul.bias_backward(dbias, dout)
    sums = workspace("matmul_dgelu_bgrad_sums", C_, bf16)
    cublaslt.matmul(OP_N, OP_N, C_, rows, OC, weight, C_, dout, OC, dinp, C_,
                    cublaslt.EPILOGUE_DGELU_BGRAD, sums, pre_gelu)
    dev_kernel("bias_accumulate")((ceil_div(C_, 256),), (256,), (fc_dbias, sums, np.int32(C_)))
    cublaslt.matmul(OP_N, OP_T, C_, OC, rows, inp, C_, dout, OC, dweight, C_, accumulate=True)


def fcproj_backward_v7_fc_dbias(dinp, dweight, dbias, dout, inp, weight, pre_gelu, fc_dbias):
    """Version 7, then fc's bias gradient by our kernels over dinp (what the model runs)."""
    matmul.gelu_matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu)
    matmul.bias_backward(fc_dbias, dinp)


FORWARD = {1: forward_v1, 2: forward_v2, 3: matmul.matmul_forward}
GELU_FORWARD = {4: fc_gelu_v4, 5: matmul.matmul_gelu_forward}
GELU_BACKWARD = {6: fcproj_backward_v6, 7: matmul.gelu_matmul_backward}
BACKWARD = {8: matmul.matmul_backward, 9: backward_v9}
GELU_BGRAD = {10: fcproj_backward_v10}
VERSIONS = {**FORWARD, **GELU_FORWARD, **GELU_BACKWARD, **BACKWARD, **GELU_BGRAD}


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


def check_gelu_forward(rng, forward):
    # weights of scale 1/sqrt(C): fch of order 1, where GELU bends
    inp, bias = randn(rng, CHECK_N, C), randn(rng, 4 * C)
    weight = randn(rng, 4 * C, C, scale=C ** -0.5)
    ref, ref_pre = np.empty((CHECK_N, 4 * C), np.float32), np.empty((CHECK_N, 4 * C), np.float32)
    cpu.matmul_gelu_forward(ref, ref_pre, inp, weight, bias)
    out, pre = poisoned(CHECK_N, 4 * C), poisoned(CHECK_N, 4 * C)
    forward(out, pre, gpu(inp), gpu(weight), gpu(bias))
    return {"fc out": rel_error(host(out), ref), "fc pre_gelu": rel_error(host(pre), ref_pre)}


def check_gelu_backward(rng, backward):
    dout, weight, pre = randn(rng, CHECK_N, C), randn(rng, C, 4 * C), randn(rng, CHECK_N, 4 * C)
    inp = np.empty_like(pre)
    cpu.gelu_forward(inp, pre)
    inp = inp.astype(bf16).astype(np.float32)            # the model keeps gelu(fch) in bf16
    dweight, dbias = randn(rng, C, 4 * C), randn(rng, C)  # accumulated into
    d_dinp, d_dweight, d_dbias = poisoned(CHECK_N, 4 * C), gpu(dweight), gpu(dbias)
    backward(d_dinp, d_dweight, d_dbias, gpu(dout), gpu(inp), gpu(weight), gpu(pre))
    dinp = np.empty((CHECK_N, 4 * C), dtype=np.float32)
    cpu.gelu_matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre)
    return {"fcproj dinp": rel_error(host(d_dinp), dinp),
            "fcproj dweight": rel_error(host(d_dweight), dweight),
            "fcproj dbias": rel_error(host(d_dbias), dbias)}


def check_backward(rng, backward):
    errors = {}
    for name, c, oc, has_bias in SHAPES:
        dout, inp, weight = randn(rng, CHECK_N, oc), randn(rng, CHECK_N, c), randn(rng, oc, c)
        dweight, dbias = randn(rng, oc, c), randn(rng, oc)      # accumulated into
        d_dinp, d_dweight, d_dbias = poisoned(CHECK_N, c), gpu(dweight), gpu(dbias)
        backward(d_dinp, d_dweight, d_dbias if has_bias else None, gpu(dout), gpu(inp),
                 gpu(weight))
        dinp = np.empty((CHECK_N, c), dtype=np.float32)
        cpu.matmul_backward(dinp, dweight, dbias if has_bias else None, dout, inp, weight)
        errors[f"{name} dinp"] = rel_error(host(d_dinp), dinp)
        errors[f"{name} dweight"] = rel_error(host(d_dweight), dweight)
        if has_bias:
            errors[f"{name} dbias"] = rel_error(host(d_dbias), dbias)
    return errors


def check_gelu_bgrad(rng, backward):
    """check_gelu_backward's, and fc's bias gradient: the column sums of dinp, added to fc_dbias."""
    dout, weight, pre = randn(rng, CHECK_N, C), randn(rng, C, 4 * C), randn(rng, CHECK_N, 4 * C)
    inp = np.empty_like(pre)
    cpu.gelu_forward(inp, pre)
    inp = inp.astype(bf16).astype(np.float32)
    dweight, dbias, fc_dbias = randn(rng, C, 4 * C), randn(rng, C), randn(rng, 4 * C)
    d_dinp, d_dweight, d_dbias, d_fc_dbias = (poisoned(CHECK_N, 4 * C), gpu(dweight), gpu(dbias),
                                              gpu(fc_dbias))
    backward(d_dinp, d_dweight, d_dbias, gpu(dout), gpu(inp), gpu(weight), gpu(pre), d_fc_dbias)
    dinp = np.empty((CHECK_N, 4 * C), dtype=np.float32)
    cpu.gelu_matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre)
    return {"fcproj dinp": rel_error(host(d_dinp), dinp),
            "fcproj dweight": rel_error(host(d_dweight), dweight),
            "fcproj dbias": rel_error(host(d_dbias), dbias),
            "fc dbias": rel_error(host(d_fc_dbias), fc_dbias + dinp.sum(axis=0))}


CHECKS = {**{v: check_forward for v in FORWARD}, **{v: check_gelu_forward for v in GELU_FORWARD},
          **{v: check_gelu_backward for v in GELU_BACKWARD},
          **{v: check_backward for v in BACKWARD}, **{v: check_gelu_bgrad for v in GELU_BGRAD}}


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
    return median_ms(forward), median_ms(backward)


def verdict(err):
    return "ok" if err < TOL else "FAIL"


def tflops(flops, ms):
    return f"{flops / ms / 1e9:.0f}"


def gelu_rows(rng, versions):
    """Timing rows of the fc forward with its GELU (versions 4, 5) and of the fcproj backward
    through it (6, 7), at B*T = N rows."""
    rows, flops = [], 2 * N * C * 4 * C
    inp, dout, fch = tiled(rng, N, C), tiled(rng, N, C), tiled(rng, N, 4 * C)
    fcw, fcb = gpu(randn(rng, 4 * C, C, scale=C ** -0.5)), gpu(randn(rng, 4 * C))
    projw, dweight, dbias = gpu(randn(rng, C, 4 * C)), gpu(randn(rng, C, 4 * C)), gpu(randn(rng, C))
    out, pre, dinp = (cp.empty((N, 4 * C), dtype=bf16) for _ in range(3))
    for version in (v for v in versions if v in GELU_FORWARD):
        ms = median_ms(lambda: VERSIONS[version](out, pre, inp, fcw, fcb))
        rows.append(("fc+gelu", f"{N}x{C} @ {C}x{4 * C}", "forward", version, f"{ms:.3f}",
                     tflops(flops, ms)))
    for version in (v for v in versions if v in GELU_BACKWARD):
        # inp (gelu(fch)) and pre_gelu (fch): any values time the same
        ms = median_ms(lambda: VERSIONS[version](dinp, dweight, dbias, dout, fch, projw, fch))
        rows.append(("fcproj+dgelu", f"{N}x{4 * C} @ {4 * C}x{C}", "backward", version,
                     f"{ms:.3f}", tflops(2 * flops, ms)))
    fc_dbias = gpu(randn(rng, 4 * C))
    bgrad = {"7 + fc dbias": fcproj_backward_v7_fc_dbias, **GELU_BGRAD}
    for version, run in bgrad.items():
        if version in versions or (7 in versions and version == "7 + fc dbias"):
            ms = median_ms(lambda: run(dinp, dweight, dbias, dout, fch, projw, fch, fc_dbias))
            rows.append(("fcproj+dgelu, fc dbias", f"{N}x{4 * C} @ {4 * C}x{C}", "backward",
                         version, f"{ms:.3f}", tflops(2 * flops, ms)))
    return rows


def time_or_dash(fn):
    """median_ms(fn) formatted, or '-' where cuBLASLt has no algorithm for the call."""
    try:
        return f"{median_ms(fn):.3f}"
    except RuntimeError:
        return "-"


def ranked_rows(rng):
    """Each of llmpy's products at each shape, timed with the heuristic's first CHOICES
    algorithms (a '-' where it offers fewer)."""
    rows = []
    for name, c, oc, has_bias in SHAPES:
        inp, dout, weight = tiled(rng, N, c), tiled(rng, N, oc), gpu(randn(rng, oc, c))
        bias = gpu(randn(rng, oc)) if has_bias else None
        out, dinp, dweight = (cp.empty((N, oc), dtype=bf16), cp.empty((N, c), dtype=bf16),
                              gpu(randn(rng, oc, c)))
        sums = cp.empty(oc, dtype=bf16)
        forward_epilogue = cublaslt.EPILOGUE_BIAS if has_bias else cublaslt.EPILOGUE_DEFAULT
        dweight_epilogue = cublaslt.EPILOGUE_BGRADB if has_bias else cublaslt.EPILOGUE_DEFAULT
        products = {
            "forward": lambda i: cublaslt.matmul(OP_T, OP_N, oc, N, c, weight, c, inp, c, out, oc,
                                                 forward_epilogue, bias, choice=i),
            "dinp": lambda i: cublaslt.matmul(OP_N, OP_N, c, N, oc, weight, c, dout, oc, dinp, c,
                                              choice=i),
            "dweight": lambda i: cublaslt.matmul(OP_N, OP_T, c, oc, N, inp, c, dout, oc, dweight,
                                                 c, dweight_epilogue, sums if has_bias else None,
                                                 accumulate=True, choice=i)}
        if name == GELU_INPUT:
            pre_gelu = tiled(rng, N, c)
            products["dinp+dgelu"] = lambda i: cublaslt.matmul(
                OP_N, OP_N, c, N, oc, weight, c, dout, oc, dinp, c, cublaslt.EPILOGUE_DGELU,
                aux=pre_gelu, choice=i)
        for product, run in products.items():
            rows.append((name, product, *(time_or_dash(lambda: run(i)) for i in range(CHOICES))))
    return rows


def dweight_rows(rng):
    """The dweight product (dW += dout^T inp, k = B*T) with and without the bias-gradient
    epilogue, under each mask of split-K reductions cuBLASLt may use, against cuBLAS's gemm and
    llmpy's dbias kernels."""
    rows, masks = [], {"none": cublaslt.REDUCTION_SCHEME_NONE,
                       "fp32 workspace": cublaslt.REDUCTION_SCHEME_COMPUTE_TYPE,
                       "any": 7}
    default = cublaslt.REDUCTION_SCHEMES
    for name, c, oc, has_bias in SHAPES:
        inp, dout, dweight = tiled(rng, N, c), tiled(rng, N, oc), gpu(randn(rng, oc, c))
        sums, dbias = cp.empty(oc, dtype=bf16), gpu(randn(rng, oc))
        ms = median_ms(lambda: gemm(OP_N, OP_T, c, oc, N, inp, c, dout, oc, dweight, c,
                                  accumulate=True))
        bias_ms = median_ms(lambda: matmul.bias_backward(dbias, dout)) if has_bias else 0.0
        rows.append((name, "cuBLAS gemm (+ llmpy's dbias)", f"{ms:.3f}", f"{ms + bias_ms:.3f}"))

        def product(epilogue=cublaslt.EPILOGUE_DEFAULT, bias=None):
            cublaslt.matmul(OP_N, OP_T, c, oc, N, inp, c, dout, oc, dweight, c, epilogue, bias,
                            accumulate=True)
        for label, mask in masks.items():
            cublaslt.REDUCTION_SCHEMES = mask
            plain = time_or_dash(product)
            with_bias = time_or_dash(lambda: product(cublaslt.EPILOGUE_BGRADB, sums)) \
                if has_bias else "-"
            rows.append((name, f"cuBLASLt, split-K: {label}", plain, with_bias))
    cublaslt.REDUCTION_SCHEMES = default
    return rows


def main():
    rng = np.random.default_rng(0)
    versions = selected_versions(VERSIONS)
    for version in versions:
        for name, err in CHECKS[version](rng, VERSIONS[version]).items():
            print(f"version {version} {name}: relative error {err:.2e} {verdict(err)}")

    rows = []
    for name, c, oc, has_bias in SHAPES:
        inp, dout = tiled(rng, N, c), tiled(rng, N, oc)
        weight, dweight = gpu(randn(rng, oc, c)), gpu(randn(rng, oc, c))
        bias = gpu(randn(rng, oc)) if has_bias else None
        dbias = gpu(randn(rng, oc)) if has_bias else None
        out, dinp = cp.empty((N, oc), dtype=bf16), cp.empty((N, c), dtype=bf16)
        flops = 2 * N * c * oc
        shape = f"{N}x{c} @ {c}x{oc}"
        for version in (v for v in versions if v in FORWARD):
            ms = median_ms(lambda: VERSIONS[version](out, inp, weight, bias))
            rows.append((name, shape, "forward", version, f"{ms:.3f}", tflops(flops, ms)))
        for version in (v for v in versions if v in BACKWARD):
            ms = median_ms(lambda: VERSIONS[version](dinp, dweight, dbias, dout, inp, weight))
            rows.append((name, shape, "backward", version, f"{ms:.3f}", tflops(2 * flops, ms)))
        reference = torch_times(inp, weight, bias, out, dout, dinp, dweight, dbias)
        if reference:
            fwd, bwd = reference
            rows.append((name, shape, "forward", "torch", f"{fwd:.3f}", tflops(flops, fwd)))
            rows.append((name, shape, "backward", "torch", f"{bwd:.3f}", tflops(2 * flops, bwd)))
    rows += gelu_rows(rng, versions)
    print(f"\nB*T = {N} rows; TFLOP/s of the gemms (bias and GELU work included in the time)")
    print_table(rows, ["matmul", "shape", "pass", "version", "ms", "TFLOP/s"])

    rows = []
    for name, oc in [("qkv", 3 * C), ("fc", 4 * C), ("fcproj", C)]:
        dout, dbias = tiled(rng, N, oc), gpu(randn(rng, oc))
        for chunk in ROWS_PER_CHUNK:
            ms = median_ms(lambda: matmul.bias_backward(dbias, dout, rows_per_chunk=chunk))
            rows.append((name, f"{N}x{oc}", chunk, f"{ms:.4f}", f"{dout.nbytes / ms / 1e6:.0f}"))
    print("\ndbias alone (GB/s: dout read once)")
    print_table(rows, ["matmul", "dout", "rows_per_chunk", "ms", "GB/s"])
    print("\nthe dweight product (ms; with dbias: llmpy's kernels after the gemm, or cuBLASLt's "
          "BGRADB epilogue)")
    print_table(dweight_rows(rng), ["matmul", "dweight by", "ms", "with dbias ms"])
    print("\ncuBLASLt's ranked algorithms (ms; llmpy runs choice 0)")
    print_table(ranked_rows(rng), ["matmul", "product", *[f"choice {i}" for i in range(CHOICES)]])


if __name__ == "__main__":
    main()
