"""The model with --fp8 1 (llmpy/cuda/fp8_linear.py) against the PyTorch reference in fp64, against
the bf16 model, and its scales against the tensors they were taken from.

Tolerances: an E4M3 operand is rounded to 2^-4 relative at worst (E5M2: 2^-3), so each FP8
product's outputs carry ~5% (gradients ~8%) relative noise against ~0.3% for bf16: a loss, the
mean over many positions, stays within ~1%, and a weight's gradient, summed over B*T rows, keeps
its direction (cosine > 0.98) while single elements may be off by 20%. A wrong scale (a factor
of 2 or more), a wrong slot or a transposed operand moves the loss by far more than 2% and the
gradients' cosine towards 0."""
import cupy as cp
import numpy as np
import pytest
import torch

from llmpy import backends, cpu, cuda, fp8
from llmpy.config import PARAM_NAMES, from_descriptor, param_shapes
from llmpy.fp8_linear import LINEARS
from llmpy.gpt2 import GPT2, split_flat
from llmpy.optim import AdamW
from llmpy.testing.torch_gpt2 import TorchGPT2
from tests.gpu.test_gpt2_cuda import cosine
from tests.test_gpt2 import random_batch, random_params

pytestmark = pytest.mark.skipif(
    backends.fp8_capability_problem(cuda.device_name(), cp.cuda.Device().compute_capability) is not None,
    reason="no FP8 tensor cores")

D12, B, T = from_descriptor("d12"), 4, 64
# each linear layer's input, in the order of LINEARS
INPUTS = ("ln1", "atty", "ln2", "fch_gelu")


@pytest.mark.parametrize("loss_scale", [1.0, 1e-4])
def test_fp8_loss_and_gradients_match_torch_fp64(loss_scale):
    # 1e-4: per-position gradients as small as a batch of 65,536 tokens makes them, which E5M2
    # flushes to zero at a scale that does not fit them (the first pass's, say)
    params = random_params(D12, seed=31)
    inputs, targets = random_batch(D12, B, T, seed=32)
    ref = TorchGPT2(D12, params, dtype=torch.float64)
    _, loss_ref = ref(inputs, targets)
    (loss_ref * loss_scale).backward()
    model = GPT2(D12, cuda, B, T, params=params, fp8=1)
    model.zero_grad()
    model.forward_backward(inputs, targets, loss_scale=loss_scale)
    print(f"loss {model.mean_loss():.5f} torch fp64 {loss_ref.item():.5f}")
    assert abs(model.mean_loss() - loss_ref.item()) < 1e-2 * loss_ref.item()
    grads = split_flat(cuda.to_host(model.grads_flat).astype(np.float32), param_shapes(D12))
    grads_ref = split_flat(ref.flat(grads=True), param_shapes(D12))
    for name in PARAM_NAMES:
        cos = cosine(grads[name], grads_ref[name])
        ratio = np.linalg.norm(grads[name]) / np.linalg.norm(grads_ref[name])
        print(f"{name:9s} cos {cos:.6f} norm ratio {ratio:.4f}")
        assert cos > 0.98 and abs(ratio - 1) < 0.05, f"grad {name}: cos {cos:.6f}, norm ratio {ratio:.4f}"


def test_each_cast_records_its_tensors_largest_value_and_scales_follow_the_history():
    params = random_params(D12, seed=33)
    inputs, targets = random_batch(D12, B, T, seed=34)
    model = GPT2(D12, cuda, B, T, params=params, fp8=1)
    model.zero_grad()
    model.forward_backward(inputs, targets)     # the calibrating pass, then the first pass
    e4m3, e5m2 = model.fp8.e4m3, model.fp8.e5m2
    amax, history, scale = (cuda.to_host(a) for a in (e4m3.amax, e4m3.history, e4m3.scale))
    slots = len(model.fp8.weights)
    acts = model.acts(B, T)
    for l in range(D12.num_layers):
        for j, (name, inp) in enumerate(zip(LINEARS, INPUTS)):
            slot = 4 * l + j
            # this pass's largest |x| of the input and of the weight, not yet pushed
            x = cuda.to_host(acts[inp][l]).astype(np.float32)
            assert amax[slot] == np.abs(x).max(), (inp, l)
            weight = cuda.to_host(model.params[name][l]).astype(np.float32)
            assert amax[slots + slot] == np.abs(weight).max(), (name, l)
    # the scales this pass cast with: fmt.max over each history's largest (the calibrating pass)
    np.testing.assert_array_equal(scale, np.float32(fp8.E4M3.max) / history.max(axis=1))
    grad_amax, grad_history, grad_scale = (cuda.to_host(a) for a in (e5m2.amax, e5m2.history, e5m2.scale))
    assert np.all(grad_amax > 0), "every output gradient was cast"
    np.testing.assert_array_equal(grad_scale, np.float32(fp8.E5M2.max) / grad_history.max(axis=1))
    assert np.all(grad_scale > 1e3), "gradients of ~1e-4 and less are scaled up"


def test_the_gpus_fp8_loss_is_the_cpu_emulations():
    # llmpy/cpu_fp8.py computes the same FP8 numbers in fp32 with NumPy: the two differ as the bf16
    # and fp32 models do (tests/gpu/test_gpt2_cuda.py), plus the FP8 codes that rounding flips
    params = random_params(D12, seed=37)
    inputs, targets = random_batch(D12, B, T, seed=38)
    losses = []
    for ops in (cpu, cuda):
        model = GPT2(D12, ops, B, T, params=params, fp8=1)
        model.forward_backward(inputs, targets)
        losses.append(model.mean_loss())
    print(f"fp8 loss: cpu {losses[0]:.5f} gpu {losses[1]:.5f}")
    assert abs(losses[0] - losses[1]) < 1e-2 * losses[0]


def fp8_or_bf16_losses(params, fp8_on, steps=8):
    model = GPT2(D12, cuda, B, T, params=params, fp8=fp8_on)
    optimizer = AdamW(model, params, weight_decay=0.1)
    losses = []
    for step in range(steps):
        inputs, targets = random_batch(D12, B, T, seed=300 + step % 2)
        model.zero_grad()
        model.forward_backward(inputs, targets)
        optimizer.update(3e-4)
        losses.append(model.mean_loss())
    return losses


def test_fp8_training_tracks_bf16_and_repeats_bit_for_bit():
    params = random_params(D12, seed=35)
    bf16, fp8_run, fp8_again = (fp8_or_bf16_losses(params, f) for f in (0, 1, 1))
    print("bf16", " ".join(f"{x:.4f}" for x in bf16))
    print("fp8 ", " ".join(f"{x:.4f}" for x in fp8_run))
    assert fp8_run == fp8_again
    assert fp8_run[-1] < fp8_run[0] - 1.0, "FP8 learns the two batches"
    for a, b in zip(fp8_run, bf16):
        assert abs(a - b) < 2e-2 * b
