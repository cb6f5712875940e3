"""The whole CPU model against the PyTorch reference (llmpy/testing/torch_gpt2.py) in float64:
logits, loss, every parameter's gradient, and training with AdamW — llm.c's test_gpt2 in spirit.

Tolerance: our model is fp32 end to end, the reference fp64. fp32 rounding grows with depth
and with the length of the sums (C, 4C and Vp terms per dot product): measured 2e-7..6e-7 of a
tensor's scale for the tiny model and 5e-7..1.5e-6 for d12 (logits and every gradient), so 1e-5
leaves a margin of ~7x while any wrong term in a formula gives errors of order 1.
"""
import numpy as np
import pytest
import torch

from llmpy import cpu
from llmpy.config import GPT2Config, PARAM_NAMES, from_descriptor, param_shapes
from llmpy.gpt2 import GPT2, carve, init_params, split_flat
from llmpy.optim import AdamW
from llmpy.testing.compare import assert_close
from llmpy.testing.torch_gpt2 import TorchGPT2

TINY = GPT2Config(max_seq_len=16, vocab_size=97, padded_vocab_size=128, num_layers=2,
                  num_heads=4, channels=32)


def random_batch(cfg, B, T, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T + 1)).astype(np.int32)
    return tokens[:, :-1], tokens[:, 1:]


def random_params(cfg, seed):
    """llm.c's init, then every tensor (layernorms, biases too) perturbed so that no gradient
    is trivially zero or one."""
    params = init_params(cfg, seed)
    params += np.random.default_rng(seed + 1).normal(0, 0.02, params.shape).astype(np.float32)
    split_flat(params, param_shapes(cfg))["wte"][cfg.vocab_size:] = 0
    return params


def forward_backward(model, inputs, targets, loss_scale=1.0):
    """One micro-step's gradients, accumulated into model.grads."""
    model.forward(inputs, targets, loss_scale=loss_scale)
    model.backward()


def trained_once(params, inputs, targets, B=None, T=None, **model_args):
    """A TINY GPT2 of these params, allocated for B x T (the batch's own shape by default), after
    zero_grad and one forward and backward of the batch."""
    b, t = inputs.shape
    model = GPT2(TINY, cpu, B or b, T or t, params=params, **model_args)
    model.zero_grad()
    forward_backward(model, inputs, targets)
    return model


def check_model_against_torch(cfg, B, T, tol=1e-5):
    params = random_params(cfg, seed=1)
    inputs, targets = random_batch(cfg, B, T, seed=2)
    model = GPT2(cfg, cpu, B, T, params=params)
    ref = TorchGPT2(cfg, params)
    logits_ref, loss_ref = ref(inputs, targets)
    loss_ref.backward()

    model.forward(inputs)
    assert_close(model.logits(), logits_ref.detach(), tol, "logits")
    model.zero_grad()
    forward_backward(model, inputs, targets)
    assert abs(model.mean_loss() - loss_ref.item()) < 1e-5 * loss_ref.item()
    grads = split_flat(model.grads_flat, param_shapes(cfg))
    grads_ref = split_flat(ref.flat(grads=True), param_shapes(cfg))
    for name in PARAM_NAMES:
        assert_close(grads[name], grads_ref[name], tol, f"grad {name}")


def test_tiny_model_logits_loss_and_all_gradients_match_torch():
    check_model_against_torch(TINY, B=3, T=16)


def test_d12_logits_loss_and_all_gradients_match_torch():
    check_model_against_torch(from_descriptor("d12"), B=2, T=32)


def test_forward_backward_gives_torchs_loss_and_gradients():
    # the one call the training program makes per micro-step, at its default loss scale
    params = random_params(TINY, seed=30)
    inputs, targets = random_batch(TINY, 3, 16, seed=31)
    model = GPT2(TINY, cpu, 3, 16, params=params)
    model.zero_grad()
    model.forward_backward(inputs, targets)
    ref = TorchGPT2(TINY, params)
    loss_ref = ref(inputs, targets)[1]
    loss_ref.backward()
    assert abs(model.mean_loss() - loss_ref.item()) < 1e-5 * loss_ref.item()
    assert_close(model.grads_flat, ref.flat(grads=True), 1e-5, "grads")


def test_fresh_model_loss_is_log_vocab():
    """At llm.c's init the logits are small (std ~0.02*sqrt(C)), so the loss starts a little
    above ln(V) = 10.82, as llm.c's first step prints ~11.0."""
    cfg = from_descriptor("d6")
    inputs, targets = random_batch(cfg, 2, 16, seed=3)
    model = GPT2(cfg, cpu, 2, 16)
    model.forward(inputs, targets)
    assert 0 < model.mean_loss() - np.log(cfg.vocab_size) < 0.3


def test_padded_vocab_rows_get_no_gradient():
    model = trained_once(random_params(TINY, seed=4), *random_batch(TINY, 2, 8, seed=5))
    assert np.all(model.grads["wte"][TINY.vocab_size:] == 0)


def test_smaller_batch_in_allocated_model_matches_exact_size_model():
    params = random_params(TINY, seed=6)
    inputs, targets = random_batch(TINY, 1, 5, seed=7)
    big, exact = trained_once(params, inputs, targets, B=4, T=16), trained_once(params, inputs, targets)
    assert big.mean_loss() == exact.mean_loss()
    assert np.array_equal(big.grads_flat, exact.grads_flat)


def test_ten_adamw_steps_match_torch_losses_and_params():
    cfg, B, T, lr, wd = TINY, 2, 16, 1e-3, 0.1
    params = random_params(cfg, seed=8)
    model = GPT2(cfg, cpu, B, T, params=params)
    ref = TorchGPT2(cfg, params)
    opt = ref.adamw(lr=lr, weight_decay=wd)
    # a low clip threshold, so that clipping is exercised on every step
    clip = 0.5
    optimizer = AdamW(model, params, weight_decay=wd, grad_clip=clip)
    for step in range(10):
        inputs, targets = random_batch(cfg, B, T, seed=100 + step)
        model.zero_grad()
        forward_backward(model, inputs, targets)
        norm = optimizer.update(lr)

        opt.zero_grad()
        _, loss_ref = ref(inputs, targets)
        loss_ref.backward()
        norm_ref = torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
        opt.step()
        assert abs(model.mean_loss() - loss_ref.item()) < 1e-5 * loss_ref.item(), f"loss at step {step}"
        assert abs(norm - norm_ref.item()) < 1e-5 * norm_ref.item(), f"norm at step {step}"
    assert_close(model.params_flat, ref.flat(), 1e-5, "params after 10 steps")


def test_update_defaults_are_llm_c_adamw_without_decay_clipped_at_1():
    # llm.c's AdamW: betas (0.9, 0.95), eps 1e-8, gradient clipped to norm 1; no decay unless asked
    params = random_params(TINY, seed=19)
    model = GPT2(TINY, cpu, 2, 16, params=params)
    optimizer = AdamW(model, params)
    ref = TorchGPT2(TINY, params)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for step in range(3):
        inputs, targets = random_batch(TINY, 2, 16, seed=200 + step)
        model.zero_grad()
        forward_backward(model, inputs, targets)
        optimizer.update(1e-3)
        opt.zero_grad()
        ref(inputs, targets)[1].backward()
        assert torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0) > 1.0, "no clipping to check"
        opt.step()
    assert_close(model.params_flat, ref.flat(), 1e-5, "params after 3 steps")


def test_params_fp32_are_the_weights_as_float32():
    params = random_params(TINY, seed=20)
    model = GPT2(TINY, cpu, 2, 16, params=params)
    weights = AdamW(model, params).params_fp32()
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, params)


def test_gradient_accumulation_equals_one_big_batch():
    params = random_params(TINY, seed=9)
    inputs, targets = random_batch(TINY, 4, 8, seed=10)
    big = trained_once(params, inputs, targets)
    small = GPT2(TINY, cpu, 2, 8, params=params)
    small.zero_grad()
    for half in (slice(0, 2), slice(2, 4)):
        forward_backward(small, inputs[half], targets[half], loss_scale=0.5)
    assert_close(small.grads_flat, big.grads_flat, 1e-5, "accumulated grads")


def test_sequence_longer_than_max_seq_len_is_refused():
    with pytest.raises(ValueError, match="max_seq_len"):
        GPT2(TINY, cpu, 1, TINY.max_seq_len + 1)


@pytest.mark.parametrize("b, t", [(3, 8), (2, 9)])
def test_a_batch_larger_than_allocated_in_either_dimension_is_refused(b, t):
    model = GPT2(TINY, cpu, 2, 8, params=random_params(TINY, seed=23))
    with pytest.raises(ValueError, match=f"batch {b}x{t} exceeds the allocated 2x8"):
        model.forward(*random_batch(TINY, b, t, seed=24))


# tensors of odd sizes and mixed dtypes, as the activations are
CARVED = {"a": ((3,), np.float32), "b": ((5, 7), np.uint16), "c": ((65,), np.float32), "d": ((2, 3), np.int32)}


def test_carved_views_start_on_256_byte_boundaries_with_their_shapes_and_dtypes():
    buffer, views = carve(np, CARVED)
    starts = []
    for name, (shape, dtype) in CARVED.items():
        assert views[name].shape == shape and views[name].dtype == dtype
        starts.append(views[name].ctypes.data - buffer.ctypes.data)
        assert starts[-1] % 256 == 0, name
    assert len(set(starts)) == len(starts)


def test_a_carved_buffer_pads_each_view_by_less_than_256_bytes():
    buffer, views = carve(np, CARVED)
    assert buffer.nbytes < sum(v.nbytes for v in views.values()) + 256 * len(views)


def test_a_fresh_models_weights_are_decided_by_its_seed():
    fresh = lambda seed: GPT2(TINY, cpu, 1, 8, seed=seed).params_flat
    assert np.array_equal(fresh(5), fresh(5)) and not np.array_equal(fresh(5), fresh(6))


def test_weights_and_gradients_are_fp32_on_the_cpu():
    model = GPT2(TINY, cpu, 1, 8, params=random_params(TINY, seed=27))
    assert model.params_flat.dtype == model.grads_flat.dtype == np.float32


def test_by_default_the_forward_keeps_every_layers_gelu_output():
    # no recompute unless asked (llm.c's -r): each layer's fch_gelu is GELU (tanh form) of its fch
    model = GPT2(TINY, cpu, 2, 16, params=random_params(TINY, seed=25))
    model.forward(*random_batch(TINY, 2, 16, seed=26))
    fch, fch_gelu = (model.acts(2, 16)[name].astype(np.float64) for name in ("fch", "fch_gelu"))
    assert fch_gelu.shape[0] == TINY.num_layers
    gelu = 0.5 * fch * (1 + np.tanh(np.sqrt(2 / np.pi) * (fch + 0.044715 * fch ** 3)))
    assert_close(fch_gelu, gelu, 1e-6, "fch_gelu")


@pytest.mark.parametrize("recompute", [1, 2])
def test_recompute_gives_the_same_gradients_with_less_activation_memory(recompute):
    params = random_params(TINY, seed=17)
    inputs, targets = random_batch(TINY, 2, 16, seed=18)
    models = [trained_once(params, inputs, targets, recompute=r) for r in (0, recompute)]
    assert models[1].mean_loss() == models[0].mean_loss()
    assert np.array_equal(models[1].grads_flat, models[0].grads_flat)
    assert models[1].acts_bytes.nbytes < models[0].acts_bytes.nbytes
