"""The optimizer's kernels against llmpy.cpu: the global gradient norm (kernels/global_norm.cu) and
the AdamW update with stochastic rounding to bf16 (kernels/adamw.cu).

Tolerances: the norm sums squares in fp32 per thread (up to a few hundred terms), then in fp32
per block and fp64 across blocks: ~1e-6 from the fp64 reference. 1e-5 catches a lost or doubled
block (1/1024 of the sum); the tail test puts most of the sum in the last element.
AdamW's master weights, m and v are fp32 on both sides with the same formulas; only fused
multiply-adds and 1/(1 - beta^t) as a multiplier instead of a divisor differ, an ulp or two per
step, so 1e-6 of each tensor's scale after 3 steps. The bf16 param is checked exactly: it must be
one of the two bf16 neighbours of the fp32 master.
"""
import math

import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda.adamw import adamw_update, clip_scale, global_norm_squared
from llmpy.cuda.runtime import workspace
from llmpy.testing.bf16 import bf16
from llmpy.testing.compare import rel_error

NORM_TOL = 1e-5
ADAMW_TOL = 1e-6
HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def bf16_bits(a):
    """bf16 values (host or device) as their 16 bits, moved to fp32's bit positions."""
    return cp.asnumpy(a).view(np.uint16).astype(np.uint32) << 16


def bf16_neighbours(x):
    """The bit patterns (as fp32) of the bf16 values either side of fp32 x: toward zero (x's
    bits truncated) and away from zero (one bf16 step further)."""
    toward = np.asarray(x, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return toward, toward + np.uint32(0x10000)


def assert_bf16_neighbour(param, master):
    """Every param is its master rounded to one of its two bf16 neighbours, nothing else."""
    toward, away = bf16_neighbours(master)
    bits = bf16_bits(param)
    ok = (bits == toward) | (bits == away)
    assert ok.all(), f"{np.count_nonzero(~ok)} params are not a bf16 neighbour of their master"


# ----------------------------------------------------------------------------------------------
# global norm

@pytest.mark.parametrize("n", [5, 1_000_003, 25_000_000])
def test_global_norm_squared_matches_numpy_fp64(rng, n):
    grads = (rng.standard_normal(n) * 1e-3).astype(bf16)
    ref = float(np.sum(grads.astype(np.float64) ** 2))
    assert abs(global_norm_squared(cp.asarray(grads)) - ref) <= NORM_TOL * ref


def test_global_norm_squared_counts_every_element_of_the_tail(rng):
    # 8 * 1021 + 7 elements: one large value in the last, unpacketed, element
    grads = (rng.standard_normal(8 * 1021 + 7) * 1e-3).astype(bf16)
    grads[-1] = 1.0
    ref = float(np.sum(grads.astype(np.float64) ** 2))
    assert abs(global_norm_squared(cp.asarray(grads)) - ref) <= NORM_TOL * ref


def test_global_norm_squared_is_deterministic(rng):
    grads = cp.asarray((rng.standard_normal(10_000_000) * 1e-3).astype(bf16))
    assert global_norm_squared(grads) == global_norm_squared(grads.copy())


@pytest.mark.parametrize("grad_clip", [0.5, 1e9, 0.0], ids=["clipped", "below", "off"])
def test_clip_scale_gives_the_hosts_factor_bit_for_bit(rng, grad_clip):
    # the factor AdamW reads from the device, against the host's formula on the norm it reads
    grads = cp.asarray((rng.standard_normal(1_000_003) * 1e-2).astype(bf16))     # norm ~ 10
    workspace("global_norm_clip_scale", 1, np.float32).fill(np.nan)              # poison
    norm_squared, scale = (cp.asnumpy(x) for x in clip_scale(grads, grad_clip))
    norm = math.sqrt(float(norm_squared))
    expected = np.float32(cpu.clip_factor(norm, grad_clip))
    assert scale.view(np.uint32) == expected.view(np.uint32)
    assert float(norm_squared) == global_norm_squared(grads)


# ----------------------------------------------------------------------------------------------
# AdamW

def make_state(rng, n):
    """fp32 master weights, AdamW state partway through training, and the bf16 params."""
    master = (rng.standard_normal(n) * 0.02).astype(np.float32)
    m = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    v = ((rng.standard_normal(n) * 1e-3) ** 2).astype(np.float32)
    return master, m, v, master.astype(bf16)


def grads_for(rng, n):
    return (rng.standard_normal(n) * 1e-2).astype(bf16)


# a block of 512 threads updates 4096 elements in two sweeps of 2048: the last block's first sweep
# part full (100,008 = 24 * 4096 + 1704), or its second (102,392 = 24 * 4096 + 4088)
@pytest.mark.parametrize("n", [100_008, 102_392])
def test_adamw_matches_cpu_with_master_weights_over_3_steps(rng, n):
    master, m, v, param = make_state(rng, n)
    ref = [a.copy() for a in (master, m, v)]
    d_param, d_master, d_m, d_v = (cp.asarray(a) for a in (param, master, m, v))
    for step in (1, 2, 3):
        grad = grads_for(rng, n)
        cpu.adamw_update(ref[0], grad.astype(np.float32), ref[1], ref[2], None, **HYPER,
                         step=step, grad_scale=0.7, seed=step)
        adamw_update(d_param, cp.asarray(grad), d_m, d_v, d_master, **HYPER,
                     step=step, grad_scale=0.7, seed=step, block=512)
    for ours, theirs in zip((d_master, d_m, d_v), ref):
        assert rel_error(cp.asnumpy(ours), theirs) <= ADAMW_TOL
    assert_bf16_neighbour(d_param, cp.asnumpy(d_master))


def test_adamw_without_master_updates_the_bf16_params(rng):
    n = 4096
    _, m, v, param = make_state(rng, n)
    ref_param, ref_m, ref_v = param.astype(np.float32), m.copy(), v.copy()
    d_param, d_m, d_v = cp.asarray(param), cp.asarray(m), cp.asarray(v)
    grad = grads_for(rng, n)
    cpu.adamw_update(ref_param, grad.astype(np.float32), ref_m, ref_v, None, **HYPER,
                     step=1, grad_scale=1.0, seed=0)
    adamw_update(d_param, cp.asarray(grad), d_m, d_v, None, **HYPER, step=1, grad_scale=1.0,
                 seed=7)
    assert rel_error(cp.asnumpy(d_m), ref_m) <= ADAMW_TOL
    assert rel_error(cp.asnumpy(d_v), ref_v) <= ADAMW_TOL
    # stochastic rounding lands within one bf16 step of the fp32 result (the step of its binade:
    # 2^16 fp32 steps), plus an ulp or two of fp32 for the differing operation order
    spacing = np.spacing(np.abs(ref_param)) * 2.0**16
    err = np.abs(cp.asnumpy(d_param).astype(np.float32) - ref_param)
    assert np.all(err <= spacing * (1 + 2.0**-10))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_stochastic_rounding_is_unbiased(sign):
    # identical elements: every new master is the same fp32 value y, and the mean of the rounded
    # params must be y within a few standard errors (round-to-nearest would be 0.3 steps off)
    n = 1 << 20
    start = np.full(n, sign * (0.5 + 0.3 * 2.0**-8), dtype=np.float32)   # 0.3 of a bf16 step
    master, param = cp.asarray(start), cp.asarray(start.astype(bf16))
    grad = cp.asarray(np.full(n, sign * 0.01, dtype=np.float32).astype(bf16))
    m, v = cp.zeros(n, dtype=np.float32), cp.zeros(n, dtype=np.float32)
    adamw_update(param, grad, m, v, master, lr=1e-5, beta1=0.9, beta2=0.95, eps=1e-8,
                 weight_decay=0.0, step=1, grad_scale=1.0, seed=12345)
    y = cp.asnumpy(master)
    assert np.all(y == y[0]) and y[0] != start[0]
    toward, away = (float(b.view(np.float32)) for b in bf16_neighbours(y[0]))
    frac = (float(y[0]) - toward) / (away - toward)
    assert 0.1 < frac < 0.9, "the test wants a value well between two bf16 neighbours"
    rounded = cp.asnumpy(param).astype(np.float64)
    assert np.all((rounded == toward) | (rounded == away))
    standard_error = abs(away - toward) * np.sqrt(frac * (1 - frac) / n)
    assert abs(rounded.mean() - float(y[0])) <= 5 * standard_error


def run_adamw(state, grad, master, seed):
    d_param, d_master, d_m, d_v = (cp.asarray(a) for a in state)
    adamw_update(d_param, cp.asarray(grad), d_m, d_v, d_master if master else None, **HYPER,
                 step=3, grad_scale=1.0, seed=seed)
    return [bf16_bits(d_param)] + [cp.asnumpy(a).view(np.uint32) for a in (d_master, d_m, d_v)]


def test_adamw_is_deterministic_for_a_seed(rng):
    n = 65536
    master, m, v, param = make_state(rng, n)
    grad = grads_for(rng, n)
    for with_master in (True, False):
        first = run_adamw((param, master, m, v), grad, with_master, seed=99)
        second = run_adamw((param, master, m, v), grad, with_master, seed=99)
        for a, b in zip(first, second):
            assert np.array_equal(a, b)


def test_adamw_rounding_differs_between_seeds(rng):
    n = 65536
    master, m, v, param = make_state(rng, n)
    grad = grads_for(rng, n)
    first = run_adamw((param, master, m, v), grad, True, seed=1)
    second = run_adamw((param, master, m, v), grad, True, seed=2)
    assert not np.array_equal(first[0], second[0]), "the seed must change the rounding"
    for a, b in zip(first[1:], second[1:]):
        assert np.array_equal(a, b), "master, m and v must not depend on the seed"
