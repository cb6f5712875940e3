"""--fp8 1 in the model (llmpy/fp8_linear.py), on the CPU's emulation (llmpy/cpu_fp8.py): the
model's loss and gradients against PyTorch in fp64, each cast's recorded amax against the tensor
it cast, the scales against their histories, the calibrating pass, the rows that stay out of FP8.
tests/gpu/test_fp8_model.py checks the GPU's.

Tolerances: an E4M3 operand is rounded to 2^-4 relative at worst (E5M2: 2^-3), so each FP8
product's outputs carry ~5% (gradients ~8%) relative noise: a loss, the mean over many positions,
stays within ~1%, and a weight's gradient, summed over B*T rows, keeps its direction (cosine >
0.98). A wrong scale, slot or transpose moves the loss by far more and the cosine towards 0."""
import numpy as np
import pytest
import torch

from llmpy import cpu, cpu_fp8, fp8
from llmpy.config import PARAM_NAMES, param_shapes
from llmpy.fp8_linear import LINEARS
from llmpy.gpt2 import GPT2, split_flat
from llmpy.testing.torch_gpt2 import TorchGPT2
from tests.test_gpt2 import TINY, random_batch, random_params
from tests.test_train import losses, run

B, T = 4, 16
INPUTS = ("ln1", "atty", "ln2", "fch_gelu")      # each linear layer's input, in LINEARS' order


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def fp8_model(seed):
    params = random_params(TINY, seed=seed)
    inputs, targets = random_batch(TINY, B, T, seed=seed + 1)
    model = GPT2(TINY, cpu, B, T, params=params, fp8=1)
    model.zero_grad()
    model.forward_backward(inputs, targets)     # the calibrating pass, then the first pass
    return model, params, inputs, targets


def test_fp8_loss_and_gradients_match_torch_fp64():
    model, params, inputs, targets = fp8_model(seed=41)
    ref = TorchGPT2(TINY, params, dtype=torch.float64)
    _, loss_ref = ref(inputs, targets)
    loss_ref.backward()
    assert model.mean_loss() != pytest.approx(loss_ref.item(), rel=1e-5), "FP8 rounding shows"
    assert model.mean_loss() == pytest.approx(loss_ref.item(), rel=1e-2)
    grads = split_flat(model.grads_flat, param_shapes(TINY))
    grads_ref = split_flat(ref.flat(grads=True), param_shapes(TINY))
    for name in PARAM_NAMES:
        assert cosine(grads[name], grads_ref[name]) > 0.98, name


@pytest.mark.parametrize("loss_scale", [1.0, 1e-4])
def test_the_first_steps_gradients_are_the_size_of_the_models_without_fp8(loss_scale):
    # the calibrating pass leaves no gradient behind (twice the size if it had), and it measures
    # the gradients on the backend's own products: with 1e-4 (a d12 batch of 65,536 tokens
    # makes the per-position gradients that small), an FP8 pass at the scales of no history
    # flushes them to zero in E5M2 and measures next to nothing
    params = random_params(TINY, seed=43)
    inputs, targets = random_batch(TINY, B, T, seed=44)
    grads = []
    for f in (0, 1):
        model = GPT2(TINY, cpu, B, T, params=params, fp8=f)
        model.zero_grad()
        model.forward_backward(inputs, targets, loss_scale=loss_scale)
        grads.append(model.grads)
    for name in LINEARS:
        ratio = np.linalg.norm(grads[1][name]) / np.linalg.norm(grads[0][name])
        assert ratio == pytest.approx(1, abs=0.05), name


def test_the_calibrating_pass_measures_the_tensors_of_the_model_without_fp8():
    model, params, inputs, targets = fp8_model(seed=45)
    exact = GPT2(TINY, cpu, B, T, params=params)
    exact.forward_backward(inputs, targets)
    measured = model.fp8.e4m3.history[:, 0]         # the calibrating pass's, pushed by the next
    acts = exact.acts(B, T)
    for l in range(TINY.num_layers):
        for j, inp in enumerate(INPUTS):
            assert measured[4 * l + j] == np.abs(acts[inp][l]).max(), (inp, l)
    assert np.all(model.fp8.e5m2.history[:, 0] > 0), "every output gradient measured"


def test_the_calibrating_pass_measures_the_gradients_the_first_fp8_pass_sees():
    """The calibrating pass runs the backward from the loss (its classifier writes the logits'
    gradient), so each output gradient's largest |x| is the one the first FP8 pass measures
    after it, to within FP8's rounding of the products upstream."""
    model, *_ = fp8_model(seed=49)
    calibration, first_pass = model.fp8.e5m2.history[:, 0], model.fp8.e5m2.amax
    np.testing.assert_allclose(first_pass, calibration, rtol=0.25)


def test_each_cast_records_its_tensors_largest_value_and_scales_follow_the_history():
    model, *_ = fp8_model(seed=46)
    e4m3, e5m2 = model.fp8.e4m3, model.fp8.e5m2
    slots = len(model.fp8.weights)
    acts = model.acts(B, T)
    for l in range(TINY.num_layers):
        for j, (name, inp) in enumerate(zip(LINEARS, INPUTS)):
            # this pass's largest |x| of the input and of the weight, not yet pushed
            assert e4m3.amax[4 * l + j] == np.abs(acts[inp][l]).max(), (inp, l)
            assert e4m3.amax[slots + 4 * l + j] == np.abs(model.params[name][l]).max(), (name, l)
    # the scales this pass cast with: fmt.max over each history's largest (the calibrating pass's)
    np.testing.assert_array_equal(e4m3.scale, np.float32(fp8.E4M3.max) / e4m3.history.max(axis=1))
    assert np.all(e5m2.amax > 0), "every output gradient was cast"
    np.testing.assert_array_equal(e5m2.scale, np.float32(fp8.E5M2.max) / e5m2.history.max(axis=1))


def test_a_pass_casts_with_the_scales_of_the_passes_before():
    # the cast of layer 0's qkv input (its ln1, the same in every pass of one batch) uses
    # E4M3.max / the largest |ln1| of the calibrating pass: the FP8 values the product ran on
    model, *_ = fp8_model(seed=47)
    ln1 = model.acts(B, T)["ln1"][0].reshape(B * T, -1)
    scale = np.float32(fp8.E4M3.max) / np.abs(ln1).max()
    qkv = model.acts(B, T)["qkv"][0].reshape(B * T, -1)
    w = model.fp8.weights[0][0]
    expected = fp8.scaled_matmul(ln1, scale, fp8.E4M3, w.T, np.float32(fp8.E4M3.max) / np.abs(w).max(),
                                 fp8.E4M3) + model.params["qkvb"][0]
    np.testing.assert_allclose(qkv, expected, rtol=1e-5, atol=1e-5)


def test_a_weight_that_was_always_zero_keeps_finite_scales_and_trains():
    """Projections that start at zero (as some inits start them) record an amax of 0, so their
    scales stay the ones they started with: those must be finite, or 0 times them is NaN."""
    params = random_params(TINY, seed=47)
    shaped = split_flat(params, param_shapes(TINY))
    shaped["attprojw"][...] = 0
    shaped["fcprojw"][...] = 0
    inputs, targets = random_batch(TINY, B, T, seed=48)
    model = GPT2(TINY, cpu, B, T, params=params, fp8=1)
    for _ in range(2):
        model.zero_grad()
        model.forward_backward(inputs, targets)
        assert np.isfinite(model.mean_loss())
        assert np.isfinite(model.grads_flat).all()


def test_rows_not_a_multiple_of_32_run_the_backends_matmuls():
    params = random_params(TINY, seed=49)
    context = [3, 1, 4, 1, 5]
    logits = [GPT2(TINY, cpu, B, T, params=params, fp8=f).next_logits(context) for f in (0, 1)]
    np.testing.assert_array_equal(*logits)


def test_fp8_training_on_the_cpu_says_so_and_stays_near_fp32(tiny_run):
    fp32, fp8_run = (run(*tiny_run, "-x", 4, "-v", 0, "--fp8", f, "--device", "cpu") for f in (0, 1))
    assert "| FP8 linear layers" in fp8_run.stdout and "FP8" not in fp32.stdout
    a, b = losses(fp32.stdout), losses(fp8_run.stdout)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert b[step] != a[step] and float(b[step]) == pytest.approx(float(a[step]), rel=2e-2), step


def test_a_resumed_fp8_run_prints_the_same_losses_bit_for_bit(tiny_run, tmp_path):
    # the checkpoint keeps each process's scales, their histories and the pass's amax: resumed,
    # the casts go on as in the run that never stopped (a fresh calibration would not)
    flags = [*tiny_run, "-x", 6, "-v", 2, "-m", 1, "-l", 1e-3, "-o", tmp_path / "out", "-n", 3, "--fp8", 1,
             "--device", "cpu"]
    full = losses(run(*flags).stdout)
    (tmp_path / "out" / "DONE_00000006").unlink()         # as if killed after step 3's checkpoint
    resumed = run(*flags, "-y", 1)
    assert "resumed from step 3" in resumed.stdout
    assert losses(resumed.stdout) == {k: full[k] for k in (4, 5, 6)}


def test_the_fp8_buffers_hold_the_kernels_dtypes():
    # the GPU's kernels take the scales, inverses, amax and histories as fp32 and the FP8
    # operands as bytes: what the CPU's emulation stores them as must follow the same contract
    model, *_ = fp8_model(seed=51)
    linears = model.fp8
    for scales in (linears.e4m3, linears.e5m2):
        assert {a.dtype for a in (scales.scale, scales.inv, scales.amax, scales.history)} == {np.dtype(np.float32)}
    byte = cpu_fp8.BYTE
    assert {a.dtype for _, q, q_t in linears.weights for a in (q, q_t)} == {np.dtype(byte)}
    assert {a.dtype for a in (linears.x, *linears.x_t, linears.d, linears.d_t)} == {np.dtype(byte)}


@pytest.mark.parametrize("l", range(TINY.num_layers))
def test_every_linear_layers_forward_is_the_product_of_its_fp8_operands(l):
    # qkv, attproj, fc (with its GELU), fcproj: each output from its input and weight as cast
    # with the scales of the calibrating pass, + bias, by llmpy/fp8.py's reference product
    model, *_ = fp8_model(seed=53)
    acts, p = model.acts(B, T), model.params
    slots = len(model.fp8.weights)
    history = model.fp8.e4m3.history
    outputs = {"qkvw": acts["qkv"][l], "fcw": acts["fch"][l]}
    for j, (name, inp) in enumerate(zip(LINEARS, INPUTS)):
        if name not in outputs:       # attproj and fcproj write into the residual sums
            continue
        x = acts[inp][l].reshape(B * T, -1)
        w = p[name][l]
        x_scale = np.float32(fp8.E4M3.max) / history[4 * l + j].max()
        w_scale = np.float32(fp8.E4M3.max) / history[slots + 4 * l + j].max()
        expected = fp8.scaled_matmul(x, x_scale, fp8.E4M3, w.T, w_scale, fp8.E4M3) + p[name[:-1] + "b"][l]
        np.testing.assert_allclose(outputs[name].reshape(B * T, -1), expected, rtol=1e-5, atol=1e-5)
    gelu = np.empty_like(acts["fch"][l])
    cpu.gelu_forward(gelu, acts["fch"][l])
    np.testing.assert_array_equal(acts["fch_gelu"][l], gelu)


def test_rows_not_a_multiple_of_32_train_on_the_backends_matmuls():
    params = random_params(TINY, seed=55)
    inputs, targets = random_batch(TINY, 1, 5, seed=56)
    grads = []
    for f in (0, 1):
        model = GPT2(TINY, cpu, B, T, params=params, fp8=f)
        model.zero_grad()
        model.forward_backward(inputs, targets)
        grads.append(model.grads_flat.copy())
    np.testing.assert_array_equal(*grads)


@pytest.mark.parametrize("op", ["matmul_backward", "gelu_matmul_backward"])
def test_the_fp8_backward_ops_take_a_bias_gradient_as_the_contract_says(op):
    # the model takes the projections' bias gradients elsewhere (llmpy/fused.py's *_sums), but an
    # op given dbias adds dout's column sums to it, in FP8 as in the backend's own
    model, *_ = fp8_model(seed=57)
    rng = np.random.default_rng(58)
    weight = model.params["fcprojw"][0] if op == "gelu_matmul_backward" else model.params["qkvw"][0]
    OC, IC = weight.shape
    for rows in (B * T, 5):                 # FP8, and the backend's own
        dout = rng.normal(size=(rows, OC)).astype(np.float32)
        inp = rng.normal(size=(rows, IC)).astype(np.float32)
        dinp, dweight, dbias = np.zeros((rows, IC), np.float32), np.zeros_like(weight), np.ones(OC, np.float32)
        extra = (inp,) if op == "gelu_matmul_backward" else ()
        getattr(model.fp8, op)(dinp, dweight, dbias, dout, inp, weight, *extra)
        np.testing.assert_allclose(dbias, 1 + dout.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_b_auto_forgets_the_scales_of_its_trial_batch(tiny_run):
    # -b auto's trial forward and backward (a batch of token 0) would otherwise be the calibrating
    # pass, and its amax the first step's scales: the run must train as one given that B
    flags = [*tiny_run, "-d", 64, "-x", 2, "-v", 0, "--fp8", 1, "--device", "cpu"]
    auto, given = run(*flags, "-b", "auto"), run(*flags, "-b", 4)
    assert "-b auto: chose B=4" in auto.stdout
    assert losses(auto.stdout) == losses(given.stdout)
