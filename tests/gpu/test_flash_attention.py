"""Flash attention (kernels/flash_attention.cu, and the forward and the backward's dK/dV and dQ
kernels on wgmma in kernels/flash_attention_wgmma.cu) against the NumPy reference, llmpy/cpu.py.

Tolerance: inputs are bf16; inside, scores and probabilities are fp32 except that the
probabilities (and dS) are rounded to bf16 as tensor-core operands, and outputs are stored in
bf16: a few roundings of 2^-8 relative each, so 1e-2 of a tensor's scale for the output and
2e-2 for the gradients, which pass through two such products. A wrong mask, scale or index
gives errors of order 1.
"""
import math

import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda import flash_attention as fa
from llmpy.testing.bf16 import bits, gpu, host, poisoned, randn
from llmpy.testing.compare import assert_close

NH, HS = 3, 64
C = NH * HS


def reference(qkv, dout):
    B, T, _ = qkv.shape
    out = np.empty((B, T, C), np.float32)
    att = np.empty(cpu.attention_saved(B, NH, T)[0], np.float32)
    cpu.attention_forward(out, att, qkv, NH)
    dqkv = np.empty_like(qkv)
    cpu.attention_backward(dqkv, dout, qkv, out, att, NH)
    return out, dqkv


def run_forward(qkv, wgmma=None):
    B, T, _ = qkv.shape
    out, lse = poisoned(B, T, C), poisoned(B, NH, T, dtype=np.float32)
    fa.attention_forward(out, lse, gpu(qkv), NH, wgmma=wgmma)
    return out, lse


# both kernels of the forward and of the backward's dK/dV and dQ: mma.sync (any GPU) and wgmma
# (Hopper only; the default there)
KERNELS = [pytest.param(False, id="mma.sync"),
           pytest.param(True, id="wgmma",
                        marks=pytest.mark.skipif(not fa.hopper(), reason="wgmma is sm_90a"))]


# T: a single tile, several tiles, a partial last tile, one token (the sampler's first step);
# 129: the wgmma kernel's second block has one valid row, 1024: GPT-2's
@pytest.mark.parametrize("wgmma", KERNELS)
@pytest.mark.parametrize("B, T", [(2, 64), (2, 256), (3, 100), (1, 1), (2, 129), (1, 1024)])
def test_forward_matches_numpy(rng, B, T, wgmma):
    qkv = randn(rng, B, T, 3 * C, scale=2.0)
    out, _ = run_forward(qkv, wgmma)
    out_ref, _ = reference(qkv, np.zeros((B, T, C), np.float32))
    assert_close(host(out), out_ref, 1e-2, "out")


@pytest.mark.parametrize("wgmma", KERNELS)
def test_forward_saves_the_log2_sum_exp_of_each_row(rng, wgmma):
    B, T = 2, 130
    qkv = randn(rng, B, T, 3 * C)
    _, lse = run_forward(qkv, wgmma)
    q, k, _ = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4).astype(np.float64)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HS)
    scores[:, :, np.triu(np.ones((T, T), bool), 1)] = -np.inf
    expected = np.log2(np.exp(scores).sum(-1))
    assert np.abs(cp.asnumpy(lse) - expected).max() < 1e-3


# T = 1024: 16 key tiles add into each of the last query tiles' dQ, in order; 64 and 129: an
# odd number of query tiles, so the wgmma dQ kernel's last block has one warpgroup idle
@pytest.mark.parametrize("wgmma", KERNELS)
@pytest.mark.parametrize("B, T", [(2, 64), (2, 256), (3, 100), (2, 129), (1, 1024)])
def test_backward_matches_numpy(rng, B, T, wgmma):
    qkv, dout = randn(rng, B, T, 3 * C, scale=2.0), randn(rng, B, T, C)
    out, lse = run_forward(qkv)
    _, dqkv_ref = reference(qkv, dout)
    dqkv = poisoned(B, T, 3 * C)
    fa.attention_backward(dqkv, gpu(dout), gpu(qkv), out, lse, NH, wgmma=wgmma)
    got = host(dqkv).reshape(B, T, 3, C)
    want = dqkv_ref.reshape(B, T, 3, C)
    for i, name in enumerate(("dq", "dk", "dv")):
        assert_close(got[:, :, i], want[:, :, i], 2e-2, name)


# One token (the sampler's first step; one query tile, so the wgmma dQ kernel's block has one
# warpgroup idle): the softmax over a single key is the constant 1, so dv = dout and dq = dk = 0,
# up to the rounding of delta - dP (both dout . v). Compared with the reference, whose dq and dk
# are rounding noise too, relative errors would measure noise against noise.
@pytest.mark.parametrize("wgmma", KERNELS)
def test_backward_of_one_token_passes_dout_to_dv_and_nothing_to_q_and_k(rng, wgmma):
    qkv, dout = randn(rng, 2, 1, 3 * C, scale=2.0), randn(rng, 2, 1, C)
    out, lse = run_forward(qkv)
    dqkv = poisoned(2, 1, 3 * C)
    fa.attention_backward(dqkv, gpu(dout), gpu(qkv), out, lse, NH, wgmma=wgmma)
    dq, dk, dv = host(dqkv).reshape(2, 3, C).transpose(1, 0, 2)
    assert_close(dv, dout[:, 0], 1e-2, "dv")
    assert np.abs(np.stack([dq, dk])).max() <= 1e-5 * np.abs(dout).max()


# T = 100, 129: rows past T (the padded part of the last tile) must stay out of the sums; 129:
# the wgmma dQ kernel's last block has an idle warpgroup
@pytest.mark.parametrize("wgmma", KERNELS)
@pytest.mark.parametrize("B, T", [(3, 100), (2, 129), (1, 1024)])
def test_backward_sums_the_columns_of_dqkv_into_dbias(rng, B, T, wgmma):
    qkv, dout = randn(rng, B, T, 3 * C, scale=2.0), randn(rng, B, T, C)
    out, lse = run_forward(qkv)
    dbias0 = randn(rng, 3 * C)
    dqkv, dbias = poisoned(B, T, 3 * C), gpu(dbias0)
    fa.attention_backward_sums(dqkv, gpu(dout), gpu(qkv), out, lse, NH, dbias, wgmma=wgmma)
    # the sums of what was stored, in fp32 (only their order differs), rounded into bf16 dbias
    assert_close(host(dbias), dbias0 + host(dqkv).sum(axis=(0, 1)), 1e-2, "dbias")


@pytest.mark.parametrize("wgmma", KERNELS)
def test_backward_is_deterministic(rng, wgmma):
    B, T = 2, 256
    qkv, dout = gpu(randn(rng, B, T, 3 * C)), gpu(randn(rng, B, T, C))
    out, lse = poisoned(B, T, C), poisoned(B, NH, T, dtype=np.float32)
    fa.attention_forward(out, lse, qkv, NH)
    results = []
    for _ in range(2):
        dqkv, dbias = poisoned(B, T, 3 * C), gpu(np.zeros(3 * C, np.float32))
        fa.attention_backward_sums(dqkv, dout, qkv, out, lse, NH, dbias, wgmma=wgmma)
        results.append((bits(dqkv), bits(dbias)))
    assert all(np.array_equal(a, b) for a, b in zip(*results))


@pytest.mark.skipif(not fa.hopper(), reason="wgmma is sm_90a")
def test_backward_kernels_give_the_same_bits_on_wgmma_and_mma_sync(rng):
    # the same products in the same order, fp32 accumulators, one rounding at the end
    B, T = 2, 300
    qkv, dout = gpu(randn(rng, B, T, 3 * C)), gpu(randn(rng, B, T, C))
    out, lse = poisoned(B, T, C), poisoned(B, NH, T, dtype=np.float32)
    fa.attention_forward(out, lse, qkv, NH)
    results = []
    for wgmma in (False, True):
        dqkv = poisoned(B, T, 3 * C)
        fa.attention_backward(dqkv, dout, qkv, out, lse, NH, wgmma=wgmma)
        results.append(bits(dqkv))
    assert np.array_equal(*results)


def test_other_head_sizes_are_refused():
    qkv = cp.zeros((1, 8, 3 * 96), dtype=np.float32)
    with pytest.raises(ValueError, match="head size"):
        fa.attention_forward(None, None, qkv, 2)
