"""kernels/layernorm.cu against llmpy.cpu (NumPy, fp32) on fresh random inputs, rounded to bf16
so that both sides see the same values. Overwritten outputs start as NaN; accumulated ones start
from random values of the size of the increment, so a lost prefill or a lost term both show.

Tolerance: statistics and sums are fp32 inside the kernels and each output is rounded once to
bf16 (8-bit significand: relative error <= 2^-8 ~ 4e-3 of the value); mean and rstd stay fp32.
1e-2 of the tensor's scale keeps a 2.5x margin and still catches a wrong term: dout is made to
have a per-row offset and to correlate with n, so that mean(g) and n * mean(g * n) in dx are
each ~25% of its scale (with plain noise for dout they would be ~1-5%).
The fused residual_layernorm_forward stores a + b rounded once to bf16, checked exactly, and
normalizes that rounded sum: the reference does the same."""
import cupy as cp
import numpy as np
import pytest

from llmpy import cpu
from llmpy.cuda import elementwise, layernorm
from llmpy.testing.bf16 import bf16, bits, gpu, host, poisoned, randn
from llmpy.testing.compare import assert_close

TOL = 1e-2


def rounded(a):
    """a as bf16 values: what the GPU sees (shifted bf16 values need not be bf16 values)."""
    return a.astype(bf16).astype(np.float32)


def inputs(rng, shape):
    """Rows with an offset and a scale, as in the residual stream; weights around 1."""
    C = shape[-1]
    x, w = rounded(randn(rng, *shape, scale=3.0) + 2.0), rounded(randn(rng, C, scale=0.5) + 1.0)
    return x, w, randn(rng, C)


def statistics(x):
    mean = x.mean(-1)
    rstd = 1.0 / np.sqrt(((x - mean[..., None]) ** 2).mean(-1) + cpu.LN_EPS)
    return mean.astype(np.float32), rstd.astype(np.float32)


def backward_case(rng, shape, dinp_sums=None, **options):
    """(reference outputs, GPU outputs) of one backward from random prefills; with dinp_sums
    (on the GPU), the GPU's backward is layernorm_backward_sums, adding into it."""
    x, w, _ = inputs(rng, shape)
    mean, rstd = statistics(x)
    norm = (x - mean[..., None]) * rstd[..., None]
    dout = rounded(randn(rng, *shape) + 0.5 * norm + randn(rng, *shape[:-1], 1))
    # prefills about the increments' size: dx ~ rstd * dout * w ~ 0.3, dweight and dbias
    # (sums over N rows) ~ sqrt(N) or more
    C, N = shape[-1], x.size // shape[-1]
    dinp = randn(rng, *shape, scale=0.3)
    dw, db = randn(rng, C, scale=np.sqrt(N)), randn(rng, C, scale=np.sqrt(N))
    ref = [dinp.copy(), dw.copy(), db.copy()]
    cpu.layernorm_backward(*ref, dout, x, w, mean, rstd)
    ours = [gpu(dinp), gpu(dw), gpu(db)]
    args = (*ours, gpu(dout), gpu(x), gpu(w), cp.asarray(mean), cp.asarray(rstd))
    if dinp_sums is None:
        layernorm.layernorm_backward(*args, **options)
    else:
        layernorm.layernorm_backward_sums(*args, dinp_sums, **options)
    return ref, ours


# The backward keeps the row in registers for C <= 768 (64, 72, 520, 768 here: 72 and 520 leave
# lanes of the last 256-channel chunk idle; N = 35, 999, 3003 rows are not multiples of the
# grid's warps) and takes layernorm_backward_shared above (1024, and 1600 = GPT-2 1.5B: the last
# chunk is partial, and it needs more than the default 48 KiB of dynamic shared memory)
SHAPES = [(2, 64, 64), (5, 7, 72), (4, 128, 768), (3, 1001, 768), (3, 333, 520), (2, 64, 1600),
          (1, 300, 1024), (8, 1024, 768),
          (2, 3, 5, 128)]   # any leading shape, e.g. (L, B, T, C): rows are the leading axes


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_forward_matches_cpu(rng, shape):
    x, w, b = inputs(rng, shape)
    ref = np.empty_like(x)
    ref_mean, ref_rstd = np.empty(shape[:-1], np.float32), np.empty(shape[:-1], np.float32)
    cpu.layernorm_forward(ref, ref_mean, ref_rstd, x, w, b)
    out = poisoned(*shape)
    mean, rstd = poisoned(*shape[:-1], dtype=np.float32), poisoned(*shape[:-1], dtype=np.float32)
    layernorm.layernorm_forward(out, mean, rstd, gpu(x), gpu(w), gpu(b))
    assert_close(host(out), ref, TOL, "out")
    # fp32 statistics from the same bf16 inputs: only summation order differs
    assert_close(cp.asnumpy(mean), ref_mean, 1e-5, "mean")
    assert_close(cp.asnumpy(rstd), ref_rstd, 1e-5, "rstd")


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_backward_matches_cpu_accumulating(rng, shape):
    (ref_dinp, ref_dw, ref_db), (dinp, dw, db) = backward_case(rng, shape)
    assert_close(host(dinp), ref_dinp, TOL, "dinp")
    assert_close(host(dw), ref_dw, TOL, "dweight")
    assert_close(host(db), ref_db, TOL, "dbias")


@pytest.mark.parametrize("block_size", [32, 64, 256, 512])   # the default is 128
def test_layernorm_backward_block_sizes(rng, block_size):
    (ref_dinp, ref_dw, ref_db), (dinp, dw, db) = backward_case(rng, (3, 1001, 768),
                                                               block_size=block_size)
    assert_close(host(dinp), ref_dinp, TOL, "dinp")
    assert_close(host(dw), ref_dw, TOL, "dweight")
    assert_close(host(db), ref_db, TOL, "dbias")


@pytest.mark.parametrize("shape", [(8, 1024, 768), (2, 512, 1600)])   # both kernels
def test_layernorm_backward_is_deterministic(rng, shape):
    x, w, _ = inputs(rng, shape)
    mean, rstd = (cp.asarray(s) for s in statistics(x))
    x, w, dout = gpu(x), gpu(w), gpu(randn(rng, *shape))
    C = shape[-1]
    start = [gpu(randn(rng, *shape)), gpu(randn(rng, C)), gpu(randn(rng, C))]
    results = []
    for _ in range(2):
        grads = [a.copy() for a in start]
        layernorm.layernorm_backward(*grads, dout, x, w, mean, rstd)
        results.append([bits(a) for a in grads])
    for name, a, b in zip(("dinp", "dweight", "dbias"), *results):
        assert np.array_equal(a, b), f"{name} differs between runs"


# 72, 768: layernorm_backward_sums; 1024: layernorm_backward_shared, then matmul's bias_backward
@pytest.mark.parametrize("shape", [(5, 7, 72), (3, 1001, 768), (1, 300, 1024)])
def test_layernorm_backward_sums_the_columns_of_dinp_as_stored(rng, shape):
    C, N = shape[-1], np.prod(shape[:-1])
    sums0 = randn(rng, C, scale=np.sqrt(N))
    sums = gpu(sums0)
    (ref_dinp, ref_dw, ref_db), (dinp, dw, db) = backward_case(rng, shape, dinp_sums=sums)
    assert_close(host(dinp), ref_dinp, TOL, "dinp")
    assert_close(host(dw), ref_dw, TOL, "dweight")
    assert_close(host(db), ref_db, TOL, "dbias")
    # fp32 sums of the stored bf16 values (only their order differs), rounded into bf16 sums
    assert_close(host(sums), sums0 + host(dinp).reshape(-1, C).sum(0), TOL, "dinp_sums")


# C = 3200: the fused kernel's rows of the residual need more than the default 48 KiB of shared
# memory at 8 warps a block
FUSED_SHAPES = [(4, 128, 768), (3, 1001, 768), (2, 64, 1600), (2, 3, 5, 128), (1, 40, 3200)]


def fused_inputs(rng, shape):
    """a: the residual stream (offset, scale); b: a branch's output; weights around 1."""
    a, w, bias = inputs(rng, shape)
    return a, randn(rng, *shape), w, bias


def fused_outputs(shape):
    """Poisoned residual, out, mean, rstd."""
    return (poisoned(*shape), poisoned(*shape), poisoned(*shape[:-1], dtype=np.float32),
            poisoned(*shape[:-1], dtype=np.float32))


@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_residual_layernorm_forward_matches_cpu(rng, shape):
    a, b, w, bias = fused_inputs(rng, shape)
    residual_ref = rounded(a + b)
    ref = np.empty_like(a)
    ref_mean, ref_rstd = np.empty(shape[:-1], np.float32), np.empty(shape[:-1], np.float32)
    cpu.layernorm_forward(ref, ref_mean, ref_rstd, residual_ref, w, bias)
    residual, out, mean, rstd = fused_outputs(shape)
    layernorm.residual_layernorm_forward(residual, out, mean, rstd, gpu(a), gpu(b), gpu(w),
                                         gpu(bias))
    assert np.array_equal(host(residual), residual_ref), "residual is not a + b rounded once"
    assert_close(host(out), ref, TOL, "out")
    assert_close(cp.asnumpy(mean), ref_mean, 1e-5, "mean")
    assert_close(cp.asnumpy(rstd), ref_rstd, 1e-5, "rstd")


def test_residual_layernorm_forward_gives_the_bits_of_residual_then_layernorm(rng):
    # with -r 2 the backward recomputes ln1/ln2 by layernorm_forward from the stored residual:
    # it must reproduce what the fused kernel wrote in the forward exactly
    shape = (8, 1024, 768)
    a, b, w, bias = (gpu(x) for x in fused_inputs(rng, shape))
    fused, separate = fused_outputs(shape), fused_outputs(shape)
    layernorm.residual_layernorm_forward(*fused, a, b, w, bias)
    residual, out, mean, rstd = separate
    elementwise.residual_forward(residual, a, b)
    layernorm.layernorm_forward(out, mean, rstd, residual, w, bias)
    for name, x, y in zip(("residual", "out", "mean", "rstd"), fused, separate):
        assert np.array_equal(cp.asnumpy(x).view(np.uint8), cp.asnumpy(y).view(np.uint8)), name
