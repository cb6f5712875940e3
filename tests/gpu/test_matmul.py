"""matmul (cuBLASLt with its epilogues, kernels/matmul.cu) against llmpy.cpu on the same
bf16-rounded inputs.

Tolerance: cuBLAS accumulates in fp32 and rounds each output once to bf16, at most 2^-8 of the
value (the epilogues' bias, GELU and GELU gradient act on the fp32 accumulator before that
rounding); dweight and dbias likewise round prefill + delta once. 1e-2 of the tensor's scale
clears that, while a wrong transpose, a missing bias, a missing GELU or a lost prefill is off by
O(1).
Poison: out, pre_gelu and dinp start as NaN (written, never read); dweight and dbias start random
(they accumulate: prefill + delta is checked).
"""
import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda.matmul import (bias_backward, gelu_matmul_backward, matmul_backward, matmul_forward,
                               matmul_gelu_forward)
from llmpy.testing.bf16 import bf16, bits, gpu, host, poisoned, randn
from llmpy.testing.compare import assert_close

TOL = 1e-2


def forward(rng, B, T, C, OC, with_bias):
    inp, weight = randn(rng, B, T, C), randn(rng, OC, C)
    bias = randn(rng, OC) if with_bias else None
    ref = np.empty((B, T, OC), dtype=np.float32)
    cpu.matmul_forward(ref, inp, weight, bias)
    out = poisoned(B, T, OC)
    matmul_forward(out, gpu(inp), gpu(weight), gpu(bias) if with_bias else None)
    return host(out), ref


def forward_gelu(rng, B, T, C, OC, with_bias):
    """{name: (ours, reference)} for out = gelu(pre_gelu) and pre_gelu = inp @ W^T (+ bias)."""
    # weights of scale 1/sqrt(C): pre_gelu of order 1, where GELU bends
    inp, weight = randn(rng, B, T, C), randn(rng, OC, C, scale=C ** -0.5)
    bias = randn(rng, OC) if with_bias else None
    ref_out, ref_pre = np.empty((B, T, OC), np.float32), np.empty((B, T, OC), np.float32)
    cpu.matmul_gelu_forward(ref_out, ref_pre, inp, weight, bias)
    out, pre = poisoned(B, T, OC), poisoned(B, T, OC)
    matmul_gelu_forward(out, pre, gpu(inp), gpu(weight), gpu(bias) if with_bias else None)
    return {"out": (host(out), ref_out), "pre_gelu": (host(pre), ref_pre)}


def gelu_of(pre):
    """gelu(pre) rounded to bf16: the inp that the fcproj backward sees in the model."""
    out = np.empty_like(pre)
    cpu.gelu_forward(out, pre)
    return out.astype(bf16).astype(np.float32)


def backward(rng, B, T, C, OC, with_bias, with_gelu=False):
    """{name: (ours, reference)} for dinp, dweight and (with_bias) dbias; with_gelu: inp is
    gelu(pre_gelu) and dinp the gradient of pre_gelu (the fcproj backward)."""
    dout, weight = randn(rng, B, T, OC), randn(rng, OC, C)
    pre = randn(rng, B, T, C, scale=2.0) if with_gelu else None
    inp = gelu_of(pre) if with_gelu else randn(rng, B, T, C)
    dweight, dbias = randn(rng, OC, C), randn(rng, OC)
    d_dinp, d_dweight, d_dbias = poisoned(B, T, C), gpu(dweight), gpu(dbias)
    dinp = np.empty((B, T, C), dtype=np.float32)
    if with_gelu:
        gelu_matmul_backward(d_dinp, d_dweight, d_dbias if with_bias else None,
                             gpu(dout), gpu(inp), gpu(weight), gpu(pre))
        cpu.gelu_matmul_backward(dinp, dweight, dbias if with_bias else None, dout, inp, weight,
                                 pre)
    else:
        matmul_backward(d_dinp, d_dweight, d_dbias if with_bias else None,
                        gpu(dout), gpu(inp), gpu(weight))
        cpu.matmul_backward(dinp, dweight, dbias if with_bias else None, dout, inp, weight)
    # without a bias, dbias's prefill is the reference: it must be left alone
    return {"dinp": (host(d_dinp), dinp), "dweight": (host(d_dweight), dweight),
            "dbias": (host(d_dbias), dbias)}


def test_forward_with_bias_matches_numpy(rng):
    assert_close(*forward(rng, 2, 64, 64, 192, True), TOL, "out")


def test_forward_without_bias_matches_numpy(rng):
    assert_close(*forward(rng, 3, 40, 96, 256, False), TOL, "out")


def test_forward_at_gpt2_qkv_shape_with_odd_row_count(rng):
    # 37 rows (the sampler's growing context), C=768 -> 3C: non-square, OC not a multiple of 256
    assert_close(*forward(rng, 1, 37, 768, 2304, True), TOL, "out")


def test_backward_overwrites_dinp_and_accumulates_dweight_dbias(rng):
    for name, (ours, ref) in backward(rng, 2, 64, 64, 192, True).items():
        assert_close(ours, ref, TOL, name)


def test_backward_without_bias_leaves_dbias_alone(rng):
    for name, (ours, ref) in backward(rng, 2, 50, 96, 520, False).items():
        assert_close(ours, ref, TOL, name)


def test_backward_non_square_fcproj_like(rng):
    # C=384 in, OC=96 out (fcproj's 4C -> C at a small C), 300 rows: two dbias chunks, one partial
    for name, (ours, ref) in backward(rng, 3, 100, 384, 96, True).items():
        assert_close(ours, ref, TOL, name)


@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_with_pre_gelu_writes_pre_gelu_and_its_gelu(rng, with_bias):
    # the fc matmul (C -> 4C) with GELU in the epilogue; 150 rows: a partial row tile
    for name, (ours, ref) in forward_gelu(rng, 3, 50, 128, 512, with_bias).items():
        assert_close(ours, ref, TOL, name)


def test_backward_with_pre_gelu_gives_gradient_of_pre_gelu(rng):
    # the fcproj backward (4C -> C at C = 96) with gelu' in the dinp gemm's epilogue
    for name, (ours, ref) in backward(rng, 3, 100, 384, 96, True, with_gelu=True).items():
        assert_close(ours, ref, TOL, name)


def shifted(a):
    """a on the GPU, starting 16 bytes past a 256-byte boundary: like the per-layer views and the
    weights inside the flat parameter buffer, less aligned than cuBLASLt assumes by default."""
    buf = cp.empty(a.size + 8, dtype=np.uint16)      # copied as raw bits, as dev/cuda does
    buf[8:] = gpu(a).reshape(-1).view(np.uint16)
    return buf[8:].view(bf16).reshape(a.shape)


def test_epilogues_on_pointers_aligned_to_16_bytes_only(rng):
    B, T, C, OC = 2, 40, 64, 256
    inp, weight, bias = randn(rng, B, T, C), randn(rng, OC, C, scale=C ** -0.5), randn(rng, OC)
    ref_out, ref_pre = np.empty((B, T, OC), np.float32), np.empty((B, T, OC), np.float32)
    cpu.matmul_gelu_forward(ref_out, ref_pre, inp, weight, bias)
    out, pre = shifted(np.full((B, T, OC), np.nan)), shifted(np.full((B, T, OC), np.nan))
    matmul_gelu_forward(out, pre, shifted(inp), shifted(weight), shifted(bias))
    assert_close(host(out), ref_out, TOL, "out")
    assert_close(host(pre), ref_pre, TOL, "pre_gelu")
    # and back through fcproj (OC -> C) with gelu' in the epilogue, reading that pre_gelu
    dout, projw = randn(rng, B, T, C), randn(rng, C, OC)
    inp2 = gelu_of(host(pre))
    dinp = shifted(np.full((B, T, OC), np.nan))
    dweight, dbias = shifted(np.zeros((C, OC))), shifted(np.zeros(C))
    gelu_matmul_backward(dinp, dweight, dbias, shifted(dout), shifted(inp2), shifted(projw), pre)
    ref_dinp = np.empty((B, T, OC), np.float32)
    cpu.gelu_matmul_backward(ref_dinp, np.zeros((C, OC), np.float32), np.zeros(C, np.float32),
                             dout, inp2, projw, host(pre))
    assert_close(host(dinp), ref_dinp, TOL, "dinp")


def test_bias_backward_sums_many_partial_chunks(rng):
    # 1000 rows in chunks of 64 (the last one partial); OC=776 leaves the last column tiles of
    # both passes partly empty (776 = 3*256 + 8 = 24*32 + 8)
    dout, dbias = randn(rng, 1000, 776), randn(rng, 776)
    d_dbias = gpu(dbias)
    bias_backward(d_dbias, gpu(dout), rows_per_chunk=64)
    assert_close(host(d_dbias), dbias + dout.sum(axis=0), TOL, "dbias")


def test_matmul_is_deterministic(rng):
    # large enough (k = 8192 rows in the dweight product) for cuBLASLt to split k
    B, T, C, OC = 8, 1024, 768, 3072
    inp, weight, bias = gpu(randn(rng, B, T, C)), gpu(randn(rng, OC, C)), gpu(randn(rng, OC))
    dout, dweight0, dbias0 = gpu(randn(rng, B, T, OC)), randn(rng, OC, C), randn(rng, OC)
    results = []
    for _ in range(2):
        out, dinp = poisoned(B, T, OC), poisoned(B, T, C)
        dweight, dbias = gpu(dweight0), gpu(dbias0)
        matmul_forward(out, inp, weight, bias)
        matmul_backward(dinp, dweight, dbias, dout, inp, weight)
        results.append([bits(x) for x in (out, dinp, dweight, dbias)])
    for name, first, second in zip(["out", "dinp", "dweight", "dbias"], *results):
        assert np.array_equal(first, second), f"{name} differs between two identical runs"


def test_gelu_epilogues_are_deterministic(rng):
    # the MLP at d12's width over 8192 rows: fc with GELU_AUX_BIAS, fcproj's backward with DGELU
    B, T, C = 8, 1024, 768
    ln, fcw = gpu(randn(rng, B, T, C)), gpu(randn(rng, 4 * C, C, scale=C ** -0.5))
    fcb, projw, dout = gpu(randn(rng, 4 * C)), gpu(randn(rng, C, 4 * C)), gpu(randn(rng, B, T, C))
    results = []
    for _ in range(2):
        out, pre, dinp = poisoned(B, T, 4 * C), poisoned(B, T, 4 * C), poisoned(B, T, 4 * C)
        dweight, dbias = gpu(np.zeros((C, 4 * C))), gpu(np.zeros(C))
        matmul_gelu_forward(out, pre, ln, fcw, fcb)
        gelu_matmul_backward(dinp, dweight, dbias, dout, out, projw, pre)
        results.append([bits(x) for x in (out, pre, dinp)])
    for name, first, second in zip(["out", "pre_gelu", "dinp"], *results):
        assert np.array_equal(first, second), f"{name} differs between two identical runs"
