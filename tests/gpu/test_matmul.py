"""matmul (cuBLAS gemms + kernels/matmul.cu) against llmpy.cpu on the same bf16-rounded inputs.

Tolerance: cuBLAS accumulates in fp32 and rounds each output once to bf16, at most 2^-8 of the
value; dweight and dbias likewise round prefill + delta once. 1e-2 of the tensor's scale clears
that, while a wrong transpose, a missing bias or a lost prefill is off by O(1).
Poison: out and dinp start as NaN (beta = 0 must not read them); dweight and dbias start random
(they accumulate: prefill + delta is checked).
"""
import numpy as np

from llmpy import cpu
from llmpy.cuda.matmul import bias_backward, matmul_backward, matmul_forward
from tests.gpu.bf16 import bits, gpu, host, poisoned, randn
from tests.helpers import assert_close

TOL = 1e-2


def forward(rng, B, T, C, OC, with_bias):
    inp, weight = randn(rng, B, T, C), randn(rng, OC, C)
    bias = randn(rng, OC) if with_bias else None
    ref = np.empty((B, T, OC), dtype=np.float32)
    cpu.matmul_forward(ref, inp, weight, bias)
    out = poisoned(B, T, OC)
    matmul_forward(out, gpu(inp), gpu(weight), gpu(bias) if with_bias else None)
    return host(out), ref


def backward(rng, B, T, C, OC, with_bias):
    """{name: (ours, reference)} for dinp, dweight and (with_bias) dbias."""
    dout, inp, weight = randn(rng, B, T, OC), randn(rng, B, T, C), randn(rng, OC, C)
    dweight, dbias = randn(rng, OC, C), randn(rng, OC)
    d_dinp, d_dweight, d_dbias = poisoned(B, T, C), gpu(dweight), gpu(dbias)
    matmul_backward(d_dinp, d_dweight, d_dbias if with_bias else None,
                    gpu(dout), gpu(inp), gpu(weight))
    dinp = np.empty((B, T, C), dtype=np.float32)
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


def test_bias_backward_sums_many_partial_chunks(rng):
    # 1000 rows in chunks of 64 (the last one partial); OC=776 leaves the last column tiles of
    # both passes partly empty (776 = 3*256 + 8 = 24*32 + 8)
    dout, dbias = randn(rng, 1000, 776), randn(rng, 776)
    d_dbias = gpu(dbias)
    bias_backward(d_dbias, gpu(dout), rows_per_chunk=64)
    assert_close(host(d_dbias), dbias + dout.sum(axis=0), TOL, "dbias")


def test_matmul_is_deterministic(rng):
    # large enough (k = 8192 rows in the dweight gemm) for cuBLAS to consider split-K
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
