"""kernels/encoder.cu against llmpy.cpu (NumPy, fp32) on fresh random inputs, rounded to bf16 so
that both sides see the same values. Overwritten outputs start as NaN; accumulated ones start
from random values of the size of the increment, so a lost prefill or a lost term both show.

Tolerance: the kernels sum in fp32 and round once to bf16 (8-bit significand: relative error
<= 2^-8 ~ 4e-3 of each stored value, so of the tensor's scale); 1e-2 of the scale keeps a 2.5x
margin over that and still fails on a wrong or missing row (a few % of the scale or more)."""
import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda import encoder
from llmpy.testing.bf16 import bits, gpu, host, poisoned, randn
from llmpy.testing.compare import assert_close

TOL = 1e-2


def zipf_tokens(rng, V, B, T):
    """Token ids with a text-like frequency law: the commonest ones form long runs."""
    p = 1.0 / (np.arange(V) + 3.0)
    return rng.choice(V, size=(B, T), p=p / p.sum()).astype(np.int32)


def run_backward(rng, inp, Vp, maxT, C, gpu_inp=None):
    B, T = inp.shape
    dout = randn(rng, B, T, C)
    scale = np.sqrt(B)   # about the increments: dwpe sums B rows, dwte rows a few or more
    dwte, dwpe = randn(rng, Vp, C, scale=scale), randn(rng, maxT, C, scale=scale)
    ref_dwte, ref_dwpe = dwte.copy(), dwpe.copy()
    cpu.encoder_backward(ref_dwte, ref_dwpe, dout, inp)
    g_dwte, g_dwpe = gpu(dwte), gpu(dwpe)
    if gpu_inp is None:
        gpu_inp = cp.asarray(inp)
    encoder.encoder_backward(g_dwte, g_dwpe, gpu(dout), gpu_inp)
    assert_close(host(g_dwte), ref_dwte, TOL, "dwte")
    assert_close(host(g_dwpe), ref_dwpe, TOL, "dwpe")


@pytest.mark.parametrize("B,T,C,Vp", [(2, 64, 64, 128), (4, 256, 768, 50304), (3, 100, 200, 1000)])
def test_encoder_forward_matches_cpu(rng, B, T, C, Vp):
    maxT = T + 7
    inp = rng.integers(0, Vp, size=(B, T), dtype=np.int32)
    wte, wpe = randn(rng, Vp, C), randn(rng, maxT, C)
    ref = np.empty((B, T, C), np.float32)
    cpu.encoder_forward(ref, inp, wte, wpe)
    out = poisoned(B, T, C)
    encoder.encoder_forward(out, cp.asarray(inp), gpu(wte), gpu(wpe))
    assert_close(host(out), ref, TOL, "out")


def test_encoder_forward_reads_a_slice_of_a_wider_token_buffer(rng):
    # the model passes inputs[:b, :t] of its (B, T) buffer: rows strided by T, not t
    B, T, t, C, Vp = 3, 96, 40, 128, 500
    full = rng.integers(0, Vp, size=(B, T), dtype=np.int32)
    wte, wpe = randn(rng, Vp, C), randn(rng, T, C)
    ref = np.empty((2, t, C), np.float32)
    cpu.encoder_forward(ref, full[:2, :t], wte, wpe)
    out = poisoned(2, t, C)
    encoder.encoder_forward(out, cp.asarray(full)[:2, :t], gpu(wte), gpu(wpe))
    assert_close(host(out), ref, TOL, "out")


@pytest.mark.parametrize("B,T,C", [(2, 64, 64), (4, 256, 768), (8, 1024, 768)])
def test_encoder_backward_matches_cpu_with_text_like_tokens(rng, B, T, C):
    Vp = 50304
    run_backward(rng, zipf_tokens(rng, 50257, B, T), Vp, 1024, C)


@pytest.mark.parametrize("V", [1, 2, 5])
def test_encoder_backward_sums_runs_spanning_many_segments(rng, V):
    # a few distinct tokens: every run crosses many 32-position segments (V = 1: one run of all)
    B, T, C = 4, 200, 64
    run_backward(rng, rng.integers(0, V, size=(B, T), dtype=np.int32), 8, T, C)


def test_encoder_backward_with_distinct_tokens(rng):
    # every run is a single position: each segment writes 32 separate rows
    B, T, C = 2, 128, 64
    inp = rng.permutation(1000)[:B * T].reshape(B, T).astype(np.int32)
    run_backward(rng, inp, 1000, T, C)


def test_encoder_backward_reads_a_slice_of_a_wider_token_buffer(rng):
    B, T, t, C = 3, 96, 40, 64
    full = zipf_tokens(rng, 300, B, T)
    run_backward(rng, full[:2, :t], 304, T, C, gpu_inp=cp.asarray(full)[:2, :t])


def test_encoder_backward_is_deterministic(rng):
    B, T, C, Vp = 8, 1024, 768, 50304
    inp = cp.asarray(zipf_tokens(rng, 50257, B, T))
    dout = gpu(randn(rng, B, T, C))
    start_wte, start_wpe = gpu(randn(rng, Vp, C)), gpu(randn(rng, T, C))
    results = []
    for _ in range(2):
        dwte, dwpe = start_wte.copy(), start_wpe.copy()
        encoder.encoder_backward(dwte, dwpe, dout, inp)
        results.append((bits(dwte), bits(dwpe)))
    assert np.array_equal(results[0][0], results[1][0]), "dwte differs between runs"
    assert np.array_equal(results[0][1], results[1][1]), "dwpe differs between runs"
