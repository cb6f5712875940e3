"""Attention (cuBLAS batched gemms + kernels/attention.cu) against llmpy.cpu on the same
bf16-rounded qkv.

Tolerances: the GPU rounds to bf16 (<= 2^-8 of each value) at every stored intermediate: preatt,
att and out forward; datt, dpreatt and the gradients backward, some of them feeding a T-long
dot product. A NumPy emulation of exactly that chain lands at ~4e-3 of the tensor's scale forward
and ~6e-3 backward, so 1e-2 and 2e-2 leave a margin; a wrong mask, scale or transpose is off by
O(1). Poison: out, att and dqkv start as NaN and must be written everywhere.
"""
import cupy as cp
import numpy as np

from llmpy import cpu
from llmpy.cuda.attention import attention_backward, attention_forward, attention_saved_shape
from tests.gpu.bf16 import gpu, host, poisoned, randn
from tests.helpers import assert_close

FORWARD_TOL = 1e-2
BACKWARD_TOL = 2e-2


def forward(rng, B, T, NH, hs):
    """(ours, reference) for out and att, and the GPU att for the backward."""
    C = NH * hs
    qkv = randn(rng, B, T, 3 * C)
    out, att = poisoned(B, T, C), poisoned(*attention_saved_shape(B, NH, T))
    attention_forward(out, att, gpu(qkv), NH)
    ref_out, ref_att = np.empty((B, T, C), np.float32), np.empty((B, NH, T, T), np.float32)
    cpu.attention_forward(ref_out, ref_att, qkv, NH)
    return qkv, {"out": (host(out), ref_out), "att": (host(att), ref_att)}, att


def backward(rng, B, T, NH, hs):
    """{name: (ours, reference)} for dq, dk, dv."""
    C = NH * hs
    qkv, fwd, att = forward(rng, B, T, NH, hs)
    dout = randn(rng, B, T, C)
    dqkv = poisoned(B, T, 3 * C)
    attention_backward(dqkv, gpu(dout), gpu(qkv), att, NH)
    ref = np.empty_like(qkv)
    cpu.attention_backward(ref, dout, qkv, fwd["att"][1], NH)
    ours = host(dqkv)
    return {name: (ours[..., i * C:(i + 1) * C], ref[..., i * C:(i + 1) * C])
            for i, name in enumerate(["dq", "dk", "dv"])}


def test_forward_matches_numpy_small_heads(rng):
    for name, (ours, ref) in forward(rng, 2, 64, 4, 16)[1].items():
        assert_close(ours, ref, FORWARD_TOL, name)


def test_forward_matches_numpy_gpt2_heads(rng):
    for name, (ours, ref) in forward(rng, 2, 256, 12, 64)[1].items():
        assert_close(ours, ref, FORWARD_TOL, name)


def test_forward_for_T_not_a_multiple_of_8(rng):
    # the sampler grows T one token at a time: rows of att are then not 16-byte aligned
    for T in (1, 2, 37):
        for name, (ours, ref) in forward(rng, 2, T, 4, 64)[1].items():
            assert_close(ours, ref, FORWARD_TOL, f"{name} T={T}")


def test_att_rows_sum_to_one_with_exact_zeros_above_the_diagonal(rng):
    T = 128
    att = forward(rng, 2, T, 4, 32)[1]["att"][0]
    # each of a row's values is rounded to bf16 (<= 2^-8 of it), so the sum is within 2^-8 of 1
    assert np.abs(att.sum(axis=-1) - 1.0).max() < 1e-2
    assert np.all(att[..., np.triu(np.ones((T, T), dtype=bool), k=1)] == 0.0)


def test_backward_matches_numpy_small_heads(rng):
    for name, (ours, ref) in backward(rng, 2, 64, 4, 16).items():
        assert_close(ours, ref, BACKWARD_TOL, name)


def test_backward_matches_numpy_gpt2_heads(rng):
    for name, (ours, ref) in backward(rng, 2, 256, 12, 64).items():
        assert_close(ours, ref, BACKWARD_TOL, name)


def test_backward_for_T_not_a_multiple_of_8(rng):
    for name, (ours, ref) in backward(rng, 3, 37, 2, 64).items():
        assert_close(ours, ref, BACKWARD_TOL, name)


def test_attention_is_deterministic(rng):
    B, T, NH, hs = 4, 256, 12, 64
    qkv, dout = gpu(randn(rng, B, T, 3 * NH * hs)), gpu(randn(rng, B, T, NH * hs))
    results = []
    for _ in range(2):
        out, att = poisoned(B, T, NH * hs), poisoned(*attention_saved_shape(B, NH, T))
        dqkv = poisoned(B, T, 3 * NH * hs)
        attention_forward(out, att, qkv, NH)
        attention_backward(dqkv, dout, qkv, att, NH)
        results.append([cp.asnumpy(x).view(np.uint16) for x in (out, att, dqkv)])
    for name, first, second in zip(["out", "att", "dqkv"], *results):
        assert np.array_equal(first, second), f"{name} differs between two identical runs"
