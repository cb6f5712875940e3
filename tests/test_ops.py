"""Every CPU op, forward and backward, against PyTorch autograd in float64 on fresh random inputs.

Outputs that an op overwrites are poisoned with NaN first, so an unwritten element fails the
test; gradient outputs that accumulate start from random values, so a `=` where `+=` belongs
fails too. Tolerance: our ops run in fp32 (unit roundoff 6e-8) against an fp64 reference; with
reductions of at most a few thousand terms the error stays below ~1e-6 of the tensor's scale,
so 1e-5 is tight enough to catch any wrong term yet clear of rounding noise.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmpy import cpu
from llmpy.testing.compare import assert_close

TOL = 1e-5
B, T, C, NH = 2, 7, 24, 3


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def poisoned(*shape):
    return np.full(shape, np.nan, dtype=np.float32)


def leaf(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def test_encoder_forward_adds_token_and_position_embeddings(rng):
    V, maxT = 11, 16
    wte, wpe = randn(rng, V, C), randn(rng, maxT, C)
    inp = rng.integers(0, V, size=(B, T)).astype(np.int32)
    out = poisoned(B, T, C)
    cpu.encoder_forward(out, inp, wte, wpe)
    ref = F.embedding(torch.from_numpy(inp).long(), leaf(wte)) + leaf(wpe)[:T]
    assert_close(out, ref.detach(), TOL, "encoder out")


def test_encoder_backward_accumulates_repeated_tokens(rng):
    V, maxT = 5, 16      # few tokens: each id repeats, so the scatter-add must accumulate
    wte, wpe = leaf(randn(rng, V, C)), leaf(randn(rng, maxT, C))
    inp = rng.integers(0, V, size=(B, T)).astype(np.int32)
    dout = randn(rng, B, T, C)
    (F.embedding(torch.from_numpy(inp).long(), wte) + wpe[:T]).backward(torch.from_numpy(dout).double())
    dwte0, dwpe0 = randn(rng, V, C), randn(rng, maxT, C)
    dwte, dwpe = dwte0.copy(), dwpe0.copy()
    cpu.encoder_backward(dwte, dwpe, dout, inp)
    assert_close(dwte - dwte0, wte.grad, TOL, "dwte")
    assert_close(dwpe - dwpe0, wpe.grad, TOL, "dwpe")


def test_layernorm_forward_normalizes_and_saves_statistics(rng):
    x, w, b = randn(rng, B, T, C, scale=3.0) + 1.5, randn(rng, C), randn(rng, C)
    out, mean, rstd = poisoned(B, T, C), poisoned(B, T), poisoned(B, T)
    cpu.layernorm_forward(out, mean, rstd, x, w, b)
    ref = F.layer_norm(leaf(x), (C,), leaf(w), leaf(b), eps=1e-5)
    assert_close(out, ref.detach(), TOL, "ln out")
    x64 = x.astype(np.float64)
    assert_close(mean, x64.mean(-1), TOL, "mean")
    assert_close(rstd, 1 / np.sqrt(x64.var(-1) + 1e-5), TOL, "rstd")


def test_layernorm_forward_adds_eps_to_the_variance_of_small_inputs(rng):
    # std 3e-3: the variance (~1e-5) is of the order of eps = 1e-5, so rstd = 1/sqrt(var + eps)
    # differs by tens of percent from 1/sqrt(var); a wrong or missing eps is an error of order 1.
    # Zero-centred, so that x - mean loses no digits in fp32
    x, w, b = randn(rng, B, T, C, scale=3e-3), randn(rng, C), randn(rng, C)
    out, mean, rstd = poisoned(B, T, C), poisoned(B, T), poisoned(B, T)
    cpu.layernorm_forward(out, mean, rstd, x, w, b)
    ref = F.layer_norm(leaf(x), (C,), leaf(w), leaf(b), eps=1e-5)
    assert_close(out, ref.detach(), TOL, "ln out")
    assert_close(rstd, 1 / np.sqrt(x.astype(np.float64).var(-1) + 1e-5), TOL, "rstd")


def test_layernorm_backward_of_small_inputs_matches_autograd(rng):
    x, w, b = randn(rng, B, T, C, scale=3e-3), randn(rng, C), randn(rng, C)
    out, mean, rstd = np.empty((B, T, C), np.float32), np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(out, mean, rstd, x, w, b)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    dout = randn(rng, B, T, C)
    F.layer_norm(xt, (C,), wt, bt, eps=1e-5).backward(torch.from_numpy(dout).double())
    dx, dw, db = np.zeros((B, T, C), np.float32), np.zeros(C, np.float32), np.zeros(C, np.float32)
    cpu.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd)
    assert_close(dx, xt.grad, TOL, "dinp")
    assert_close(dw, wt.grad, TOL, "dweight")
    assert_close(db, bt.grad, TOL, "dbias")


def test_layernorm_backward_matches_autograd_and_accumulates(rng):
    x, w, b = randn(rng, B, T, C, scale=3.0), randn(rng, C), randn(rng, C)
    out, mean, rstd = np.empty((B, T, C), np.float32), np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(out, mean, rstd, x, w, b)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    dout = randn(rng, B, T, C)
    F.layer_norm(xt, (C,), wt, bt, eps=1e-5).backward(torch.from_numpy(dout).double())
    dx0, dw0, db0 = randn(rng, B, T, C), randn(rng, C), randn(rng, C)
    dx, dw, db = dx0.copy(), dw0.copy(), db0.copy()
    cpu.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd)
    assert_close(dx - dx0, xt.grad, TOL, "dinp")
    assert_close(dw - dw0, wt.grad, TOL, "dweight")
    assert_close(db - db0, bt.grad, TOL, "dbias")


def test_layernorm_backward_sums_the_columns_of_the_updated_dinp(rng):
    x, w, b = randn(rng, B, T, C, scale=3.0), randn(rng, C), randn(rng, C)
    out, mean, rstd = np.empty((B, T, C), np.float32), np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(out, mean, rstd, x, w, b)
    dx, sums0 = randn(rng, B, T, C), randn(rng, C)
    sums = sums0.copy()
    cpu.layernorm_backward_sums(dx, np.zeros(C, np.float32), np.zeros(C, np.float32),
                                randn(rng, B, T, C), x, w, mean, rstd, sums)
    assert_close(sums - sums0, dx.sum(axis=(0, 1)), TOL, "dinp_sums")


@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul_forward_is_linear_layer(rng, with_bias):
    OC = 5 * C
    x, w, b = randn(rng, B, T, C), randn(rng, OC, C), randn(rng, OC)
    out = poisoned(B, T, OC)
    cpu.matmul_forward(out, x, w, b if with_bias else None)
    ref = F.linear(leaf(x), leaf(w), leaf(b) if with_bias else None)
    assert_close(out, ref.detach(), TOL, "matmul out")


@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul_backward_overwrites_dinp_and_accumulates_dweight_dbias(rng, with_bias):
    OC = 5 * C
    xt, wt, bt = leaf(randn(rng, B, T, C)), leaf(randn(rng, OC, C)), leaf(randn(rng, OC))
    dout = randn(rng, B, T, OC)
    F.linear(xt, wt, bt if with_bias else None).backward(torch.from_numpy(dout).double())
    dx = poisoned(B, T, C)
    dw0, db0 = randn(rng, OC, C), randn(rng, OC)
    dw, db = dw0.copy(), db0.copy()
    cpu.matmul_backward(dx, dw, db if with_bias else None, dout,
                        xt.detach().numpy().astype(np.float32), wt.detach().numpy().astype(np.float32))
    assert_close(dx, xt.grad, TOL, "dinp")
    assert_close(dw - dw0, wt.grad, TOL, "dweight")
    if with_bias:
        assert_close(db - db0, bt.grad, TOL, "dbias")
    else:
        assert np.array_equal(db, db0)


def test_matmul_gelu_forward_writes_linear_output_and_its_gelu(rng):
    OC = 4 * C
    x, w, b = randn(rng, B, T, C), randn(rng, OC, C), randn(rng, OC)
    out, pre = poisoned(B, T, OC), poisoned(B, T, OC)
    cpu.matmul_gelu_forward(out, pre, x, w, b)
    ref_pre = F.linear(leaf(x), leaf(w), leaf(b))
    assert_close(pre, ref_pre.detach(), TOL, "pre_gelu")
    assert_close(out, F.gelu(ref_pre, approximate="tanh").detach(), TOL, "gelu out")


def test_gelu_matmul_backward_gives_gradient_of_pre_gelu(rng):
    # fcproj after the GELU: out = gelu(pre) @ W^T + b; dinp is d/dpre, dW and db as without it
    C4 = 4 * C
    pt, wt, bt = leaf(randn(rng, B, T, C4, scale=2.0)), leaf(randn(rng, C, C4)), leaf(randn(rng, C))
    dout = randn(rng, B, T, C)
    F.linear(F.gelu(pt, approximate="tanh"), wt, bt).backward(torch.from_numpy(dout).double())
    pre, w = pt.detach().numpy().astype(np.float32), wt.detach().numpy().astype(np.float32)
    inp = np.empty_like(pre)
    cpu.gelu_forward(inp, pre)
    dx = poisoned(B, T, C4)
    dw0, db0 = randn(rng, C, C4), randn(rng, C)
    dw, db = dw0.copy(), db0.copy()
    cpu.gelu_matmul_backward(dx, dw, db, dout, inp, w, pre)
    assert_close(dx, pt.grad, TOL, "dpre_gelu")
    assert_close(dw - dw0, wt.grad, TOL, "dweight")
    assert_close(db - db0, bt.grad, TOL, "dbias")


def test_bias_backward_accumulates_the_column_sums_over_every_leading_axis(rng):
    dout, dbias0 = randn(rng, B, T, C), randn(rng, C)
    dbias = dbias0.copy()
    cpu.bias_backward(dbias, dout)
    assert_close(dbias - dbias0, dout.astype(np.float64).reshape(-1, C).sum(axis=0), TOL, "dbias")


def torch_attention(qkv, NH):
    B, T, C3 = qkv.shape
    q, k, v = qkv.split(C3 // 3, dim=2)
    q, k, v = (z.view(B, T, NH, -1).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


def test_attention_forward_is_causal_softmax_attention(rng):
    qkv = randn(rng, B, T, 3 * C)
    out, att = poisoned(B, T, C), poisoned(*cpu.attention_saved(B, NH, T)[0])
    cpu.attention_forward(out, att, qkv, NH)
    assert_close(out, torch_attention(leaf(qkv), NH).detach(), TOL, "attention out")
    assert np.all(np.triu(att, k=1) == 0), "attention to the future"
    assert_close(att.sum(-1), np.ones((B, NH, T)), TOL, "softmax rows")


def shared_direction(rng, logit):
    """(C,): per head a direction u with u.u / sqrt(hs) = logit, to add to q and k."""
    hs = C // NH
    u = randn(rng, NH, hs)
    u *= np.sqrt(logit * np.sqrt(hs)) / np.linalg.norm(u, axis=-1, keepdims=True)
    return u.reshape(C)


def large_logit_qkv(rng):
    """q and k share a direction, so q.k/sqrt(hs) is ~120 for every pair (exp overflows fp32
    above 88.7) while the logits of a row differ by a few units: a softmax that does not
    subtract the row's max gives inf/inf = NaN, the true softmax is well defined."""
    qkv, u = randn(rng, B, T, 3 * C), shared_direction(rng, 120)
    qkv[:, :, :2 * C] += np.concatenate([u, u])                   # q and k
    return qkv


def rows_apart_qkv(rng):
    """q.k/sqrt(hs) ~ +100 for every pair of batch 0, ~ -100 for batch 1 (its q against k): a
    softmax shifted by one max over all the rows (not each row's) leaves batch 1's rows at
    exp(-200) = 0 in fp32, 0/0."""
    qkv, u = randn(rng, B, T, 3 * C), shared_direction(rng, 100)
    qkv[:, :, C:2 * C] += u                                       # k
    qkv[0, :, :C] += u                                            # q
    qkv[1, :, :C] -= u
    return qkv


@pytest.mark.parametrize("make_qkv", [large_logit_qkv, rows_apart_qkv], ids=["large", "rows apart"])
def test_attention_forward_with_logits_beyond_exp_range_matches_torch(rng, make_qkv):
    qkv = make_qkv(rng)
    out, att = poisoned(B, T, C), poisoned(*cpu.attention_saved(B, NH, T)[0])
    cpu.attention_forward(out, att, qkv, NH)
    assert_close(out, torch_attention(leaf(qkv), NH).detach(), TOL, "attention out")


def assert_attention_backward_matches_autograd(rng, qkv):
    out, att = np.empty((B, T, C), np.float32), np.empty(cpu.attention_saved(B, NH, T)[0], np.float32)
    cpu.attention_forward(out, att, qkv, NH)
    qkvt = leaf(qkv)
    dout = randn(rng, B, T, C)
    torch_attention(qkvt, NH).backward(torch.from_numpy(dout).double())
    dqkv = poisoned(B, T, 3 * C)
    cpu.attention_backward(dqkv, dout, qkv, out, att, NH)
    assert_close(dqkv, qkvt.grad, TOL, "dqkv")


def test_attention_backward_with_logits_beyond_exp_range_matches_autograd(rng):
    assert_attention_backward_matches_autograd(rng, large_logit_qkv(rng))


def test_attention_backward_matches_autograd(rng):
    assert_attention_backward_matches_autograd(rng, randn(rng, B, T, 3 * C))


def test_attention_backward_sums_dqkv_columns_into_dbias(rng):
    qkv, dout = randn(rng, B, T, 3 * C), randn(rng, B, T, C)
    out, att = np.empty((B, T, C), np.float32), np.empty(cpu.attention_saved(B, NH, T)[0], np.float32)
    cpu.attention_forward(out, att, qkv, NH)
    dqkv, dbias0 = np.empty_like(qkv), randn(rng, 3 * C)
    dbias = dbias0.copy()
    cpu.attention_backward_sums(dqkv, dout, qkv, out, att, NH, dbias)
    assert_close(dbias - dbias0, dqkv.sum(axis=(0, 1)), TOL, "dbias")


def test_gelu_forward_is_tanh_approximation(rng):
    x = randn(rng, B, T, 4 * C, scale=3.0)
    out = poisoned(B, T, 4 * C)
    cpu.gelu_forward(out, x)
    assert_close(out, F.gelu(leaf(x), approximate="tanh").detach(), TOL, "gelu")


# Over |x| <= 3.5, where GELU's tails are not yet flat: an absolute tolerance, because the
# relative one above divides by the largest output and so hides errors in the negative tail,
# where gelu(x) is ~1e-3. fp32 rounds outputs of up to 3.5 to 2.4e-7, and the backward's
# 0.5 x (1 - tanh^2) du loses ~|x du| 2^-24 ~ 2.6e-7 to cancellation there: 1e-6 holds both
# with room, while a constant off in its 5th digit (0.04472 for 0.044715) errs by ~3e-6.
GELU_TAIL_ATOL = 1e-6


def gelu_tail_inputs(rng):
    return rng.uniform(-3.5, 3.5, size=(B, T, 4 * C)).astype(np.float32)


def test_gelu_forward_is_within_fp32_rounding_of_torch_over_the_tails(rng):
    x = gelu_tail_inputs(rng)
    out = poisoned(*x.shape)
    cpu.gelu_forward(out, x)
    err = np.abs(out - F.gelu(leaf(x), approximate="tanh").detach().numpy()).max()
    assert err <= GELU_TAIL_ATOL, f"gelu: absolute error {err:.2e}"


def test_gelu_backward_is_within_fp32_rounding_of_autograd_over_the_tails(rng):
    x = gelu_tail_inputs(rng)
    xt = leaf(x)
    F.gelu(xt, approximate="tanh").backward(torch.ones_like(xt))
    d = poisoned(*x.shape)
    cpu.gelu_backward(d, x, np.ones_like(x))
    err = np.abs(d - xt.grad.numpy()).max()
    assert err <= GELU_TAIL_ATOL, f"dgelu: absolute error {err:.2e}"


def test_gelu_backward_matches_autograd_in_place(rng):
    xt = leaf(randn(rng, B, T, 4 * C, scale=3.0))
    dout = randn(rng, B, T, 4 * C)
    F.gelu(xt, approximate="tanh").backward(torch.from_numpy(dout).double())
    d = dout.copy()      # the model runs it in place: dinp aliases dout
    cpu.gelu_backward(d, xt.detach().numpy().astype(np.float32), d)
    assert_close(d, xt.grad, TOL, "dgelu")


def test_residual_forward_adds(rng):
    a, b = randn(rng, B, T, C), randn(rng, B, T, C)
    out = poisoned(B, T, C)
    cpu.residual_forward(out, a, b)
    assert_close(out, a.astype(np.float64) + b, TOL, "residual")


def test_residual_layernorm_forward_adds_then_normalizes_the_sum(rng):
    a, b = randn(rng, B, T, C, scale=3.0) + 1.5, randn(rng, B, T, C)
    w, bias = randn(rng, C), randn(rng, C)
    residual, out, mean, rstd = poisoned(B, T, C), poisoned(B, T, C), poisoned(B, T), poisoned(B, T)
    cpu.residual_layernorm_forward(residual, out, mean, rstd, a, b, w, bias)
    x = leaf(a) + leaf(b)
    assert_close(residual, x.detach(), TOL, "residual")
    assert_close(out, F.layer_norm(x, (C,), leaf(w), leaf(bias), eps=1e-5).detach(), TOL, "ln out")
    x64 = x.detach().numpy()
    assert_close(mean, x64.mean(-1), TOL, "mean")
    assert_close(rstd, 1 / np.sqrt(x64.var(-1) + 1e-5), TOL, "rstd")


# each row its own offset, +100 and -100 in turn: a softmax shifted by one max over all the rows
# (not each row's) leaves the -100 rows at exp(-200) = 0 in fp32, so their loss is log(0)
ROWS_APART = np.where(np.arange(B * T).reshape(B, T, 1) % 2, -100.0, 100.0).astype(np.float32)


def cross_entropy_case(rng, shift=0.0):
    """(logits with NaN padding, targets, the real columns as a torch leaf, losses by torch);
    shift: added to every logit (a number, or ROWS_APART's per-row offsets)."""
    V, Vp = 37, 48
    logits = randn(rng, B, T, Vp, scale=4.0) + shift
    logits[..., V:] = np.nan          # padded columns must be neither read nor left unwritten
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    lt = leaf(logits[..., :V])
    losses = F.cross_entropy(lt.reshape(-1, V), torch.from_numpy(targets).long().reshape(-1),
                             reduction="none").reshape(B, T)
    return logits, targets, lt, losses


# 100: exp overflows fp32 above 88.7
@pytest.mark.parametrize("shift", [0.0, 100.0, ROWS_APART], ids=["0", "100", "rows apart"])
def test_softmax_crossentropy_forward_is_cross_entropy_and_leaves_the_logits(rng, shift):
    logits, targets, _, losses_ref = cross_entropy_case(rng, shift)
    before = logits.copy()
    losses = poisoned(B, T)
    cpu.softmax_crossentropy_forward(losses, logits, targets, 37)
    assert_close(losses, losses_ref.detach(), TOL, "losses")
    assert np.array_equal(logits, before, equal_nan=True)


@pytest.mark.parametrize("shift", [0.0, 100.0, ROWS_APART], ids=["0", "100", "rows apart"])
def test_softmax_crossentropy_backward_is_dloss_times_p_minus_onehot(rng, shift):
    logits, targets, lt, losses_ref = cross_entropy_case(rng, shift)
    dloss = 1.0 / (B * T * 3)
    (losses_ref.sum() * dloss).backward()
    dlogits = poisoned(*logits.shape)
    cpu.softmax_crossentropy_backward(dlogits, logits, targets, 37, dloss)
    assert_close(dlogits[..., :37], lt.grad, TOL, "dlogits")
    assert np.all(dlogits[..., 37:] == 0)


def test_softmax_crossentropy_backward_in_place_of_the_logits(rng):
    logits, targets, lt, losses_ref = cross_entropy_case(rng)
    dloss = 1.0 / (B * T)
    (losses_ref.sum() * dloss).backward()
    cpu.softmax_crossentropy_backward(logits, logits, targets, 37, dloss)
    assert_close(logits[..., :37], lt.grad, TOL, "dlogits")
    assert np.all(logits[..., 37:] == 0)


def test_classifier_gives_cross_entropy_and_writes_dlogits_in_place(rng):
    V, Vp = 37, 48
    logits = randn(rng, B, T, Vp, scale=4.0)
    logits[..., V:] = np.nan          # padded columns must be neither read nor left unwritten
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    lt = leaf(logits[..., :V])
    losses_ref = F.cross_entropy(lt.reshape(-1, V), torch.from_numpy(targets).long().reshape(-1),
                                 reduction="none").reshape(B, T)
    dloss = 1.0 / (B * T * 3)            # as with 3 steps of gradient accumulation
    (losses_ref.sum() * dloss).backward()
    losses = poisoned(B, T)
    cpu.classifier_forward_backward(logits, losses, targets, V, dloss)
    assert_close(losses, losses_ref.detach(), TOL, "losses")
    assert_close(logits[..., :V], lt.grad, TOL, "dlogits")
    assert np.all(logits[..., V:] == 0)


def test_classifier_with_logits_beyond_exp_range_matches_torch(rng):
    # logits ~100 (exp overflows fp32 above 88.7): only a softmax shifted by the row's max
    # stays finite. Differences of fp32 values within a factor 2 are exact, so the shift
    # itself adds no error
    V, Vp = 37, 48
    logits = randn(rng, B, T, Vp, scale=4.0) + 100.0
    logits[..., V:] = np.nan
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    lt = leaf(logits[..., :V])
    losses_ref = F.cross_entropy(lt.reshape(-1, V), torch.from_numpy(targets).long().reshape(-1),
                                 reduction="none").reshape(B, T)
    dloss = 1.0 / (B * T)
    (losses_ref.sum() * dloss).backward()
    losses = poisoned(B, T)
    cpu.classifier_forward_backward(logits, losses, targets, V, dloss)
    assert_close(losses, losses_ref.detach(), TOL, "losses")
    assert_close(logits[..., :V], lt.grad, TOL, "dlogits")


def test_global_norm_squared_is_sum_of_squares(rng):
    g = randn(rng, 10001)
    assert_close(cpu.global_norm_squared(g), np.sum(g.astype(np.float64) ** 2), 1e-12, "norm^2")


@pytest.mark.parametrize("grad_clip, clipped", [(0.5, True), (1e9, False), (0.0, False)])
def test_clip_scale_scales_the_norm_down_to_grad_clip_only_above_it(rng, grad_clip, clipped):
    # longer than global_norm_squared's 2^20-element chunk, so a chunking slip shows; the norm
    # is taken independently, by math.fsum over the squares in fp64 (exactly rounded)
    g = randn(rng, (1 << 20) + 4097)
    norm_ref = np.sqrt(math.fsum(np.square(g.astype(np.float64))))       # ~1024
    norm_squared, scale = cpu.clip_scale(g, grad_clip)
    assert abs(np.sqrt(norm_squared) - norm_ref) <= 1e-12 * norm_ref
    expected = grad_clip / norm_ref if clipped else 1.0
    assert abs(scale - expected) <= 1e-12 * expected


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch_over_three_steps(rng, weight_decay):
    # the clip scale changes from step to step (a constant one would cancel in m / sqrt(v)), and
    # the gradients span 1e-9 to 1, so that eps = 1e-8 decides the smallest elements' updates
    lr = 1e-2
    p = randn(rng, 64)
    pt = leaf(p)
    opt = torch.optim.AdamW([pt], lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    m, v = np.zeros_like(p), np.zeros_like(p)
    magnitudes = np.logspace(-9, 0, 64).astype(np.float32)
    for step, grad_scale in zip(range(1, 4), (0.5, 1.0, 0.125)):
        g = randn(rng, 64) * magnitudes
        pt.grad = torch.from_numpy(g).double() * grad_scale   # torch sees the clipped gradient
        opt.step()
        cpu.adamw_update(p, g, m, v, None, lr, 0.9, 0.95, 1e-8, weight_decay, step, grad_scale, 0)
    assert_close(p, pt.detach(), TOL, "params")
