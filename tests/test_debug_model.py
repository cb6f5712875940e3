"""dev/debug_model.py: one eager batch's per-layer norms, checked against the model's own buffers
computed independently here (RMS in fp64)."""
import numpy as np

from dev.debug_model import layer_norms, main
from llmpy import cpu
from llmpy.gpt2 import GPT2
from tests.test_gpt2 import TINY, random_params


def test_layer_norms_are_each_layers_rms_after_one_forward_and_backward(rng):
    B, T = 2, 8
    params = random_params(TINY, seed=3)
    inputs = rng.integers(0, TINY.vocab_size, (B, T)).astype(np.int32)
    targets = rng.integers(0, TINY.vocab_size, (B, T)).astype(np.int32)
    norms, loss = layer_norms(TINY, params, "cpu", B, T, inputs, targets)
    model = GPT2(TINY, cpu, B, T, params=params)
    model.zero_grad()
    model.forward(inputs, targets)
    model.backward()
    for l in range(TINY.num_layers):
        fch = model.acts(B, T)["fch"][l].astype(np.float64)
        assert np.isclose(norms["act", "fch"][l], np.sqrt(np.mean(fch ** 2)))
        grad = model.grads["qkvw"][l].astype(np.float64)
        assert np.isclose(norms["grad", "qkvw"][l], np.sqrt(np.mean(grad ** 2)))
    assert loss == model.mean_loss()


def test_report_prints_a_row_per_layer(tiny_run, capsys):
    main(["-e", str(tiny_run[1]), "-i", str(tiny_run[5]), "-b", "2", "-t", "16", "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("loss ")
    rows = [line for line in out if line.strip().split(" | ")[0].strip().isdigit()]
    assert len(rows) == 2 * TINY.num_layers
