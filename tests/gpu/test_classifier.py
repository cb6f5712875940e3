"""The fused classifier (kernels/classifier.cu) against llmpy.cpu on the same bf16-rounded logits.

Poison: losses start as NaN (each must be written) and the padded logits V..Vp as NaN (they must
never be read: one NaN read would make the row's softmax NaN).
Tolerances: the kernel computes in fp32 and stores dlogits in bf16, whose rounding error is at
most 2^-9 of each value, so 2^-8 of the tensor's scale is clear of rounding yet catches any wrong
term (a missed or doubled column moves a value by p, a wrong normalisation moves the whole row).
Losses stay fp32 throughout: the order of the fp32 sum over V exponentials differs, and the
kernel's 2^(x log2 e) is within 2^-22 of exp(x) (log2 e rounded to fp32 moves it by ~1e-8 per
unit of x): ~1e-6 together.
"""
import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda.classifier import classifier_forward_backward
from llmpy.testing.bf16 import bf16, gpu, host
from llmpy.testing.compare import rel_error

DLOGITS_TOL = 2.0**-8
LOSS_TOL = 1e-5


def make_inputs(rng, B, T, V, Vp, scale=2.0, shift=0.0):
    """bf16-valued logits with NaN padding, and targets that include both ends of the vocab."""
    logits = (rng.standard_normal((B, T, Vp)) * scale + shift).astype(bf16).astype(np.float32)
    logits[..., V:] = np.nan
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    targets.flat[0], targets.flat[-1] = 0, V - 1
    return logits, targets


def run_gpu(logits, targets, V, dloss, targets_gpu=None, **launch):
    d_logits, d_losses = gpu(logits), cp.full(targets.shape, np.nan, dtype=np.float32)
    targets_gpu = cp.asarray(targets) if targets_gpu is None else targets_gpu
    classifier_forward_backward(d_logits, d_losses, targets_gpu, V, dloss, **launch)
    return host(d_logits), cp.asnumpy(d_losses)


def run_cpu(logits, targets, V, dloss):
    dlogits, losses = logits.copy(), np.empty(targets.shape, dtype=np.float32)
    cpu.classifier_forward_backward(dlogits, losses, targets, V, dloss)
    return dlogits, losses


def check(rng, B, T, V, Vp, launch=None, **spread):
    logits, targets = make_inputs(rng, B, T, V, Vp, **spread)
    dloss = 1.0 / (B * T)
    dlogits, losses = run_gpu(logits, targets, V, dloss, **(launch or {}))
    ref_dlogits, ref_losses = run_cpu(logits, targets, V, dloss)
    assert rel_error(losses, ref_losses) <= LOSS_TOL
    assert rel_error(dlogits, ref_dlogits) <= DLOGITS_TOL
    assert np.all(dlogits[..., V:] == 0.0), "padded columns must be exactly 0"


def test_classifier_matches_cpu_when_V_is_not_a_multiple_of_8(rng):
    check(rng, B=4, T=64, V=1000, Vp=1024)


@pytest.mark.parametrize("block", [256, 512, 1024])
def test_classifier_matches_cpu_at_gpt2_vocab(rng, block):
    check(rng, B=2, T=3, V=50257, Vp=50304, launch={"block": block})


def test_classifier_matches_cpu_when_the_row_is_longer_than_its_cache(rng):
    # 50 of the 125 packets of a row kept in shared memory: pass 2 reads the rest again from
    # global memory (rows longer than the cache, e.g. vocabularies beyond ~57K on an H100)
    check(rng, B=2, T=16, V=1000, Vp=1024, launch={"cached": 50})


def test_classifier_matches_cpu_when_V_fills_the_row(rng):
    check(rng, B=2, T=32, V=512, Vp=512)


def test_classifier_is_stable_for_large_logits(rng):
    # exp(130) overflows fp32: the max must be subtracted, and the online sum rescaled as the
    # running max grows
    check(rng, B=2, T=16, V=3001, Vp=3008, scale=10.0, shift=100.0)


def test_classifier_reads_targets_from_a_slice(rng):
    # the model passes targets[:b, :t] of its (B, T) buffer: rows are T_full apart
    B, T, T_full, V, Vp = 2, 24, 64, 1000, 1024
    logits, targets = make_inputs(rng, B, T, V, Vp)
    full = rng.integers(0, V, size=(B + 1, T_full)).astype(np.int32)
    full[:B, :T] = targets
    dloss = 1.0 / (B * T)
    dlogits, losses = run_gpu(logits, targets, V, dloss, cp.asarray(full)[:B, :T])
    ref_dlogits, ref_losses = run_cpu(logits, targets, V, dloss)
    assert rel_error(losses, ref_losses) <= LOSS_TOL
    assert rel_error(dlogits, ref_dlogits) <= DLOGITS_TOL


def test_classifier_is_deterministic(rng):
    B, T, V, Vp = 4, 64, 50257, 50304
    logits, targets = make_inputs(rng, B, T, V, Vp)
    first = run_gpu(logits, targets, V, 1.0 / (B * T))
    second = run_gpu(logits, targets, V, 1.0 / (B * T))
    for a, b in zip(first, second):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
