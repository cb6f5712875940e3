"""The training program against an independent reference: what train_gpt2.py prints (train
loss and gradient norm at steps 1-7, val loss before the first and after the last step) and
what its -n checkpoint holds (weights, AdamW moments) against llmpy/testing/torch_gpt2.py in
float64, stepped by torch.optim.AdamW with torch's own gradient clipping on the batches that llm.c's
data loader reads in file order (--shuffle 0; tests/test_batch_order.py checks the shuffled
order), written out below. No llmpy code is on the reference side.

main() runs in this process (the other program tests run it as a subprocess), so that the
mutation-testing tool (setup.cfg) sees which functions of train_gpt2.py these tests reach.

Tolerance: the program is fp32, the reference fp64; over 7 AdamW steps of the tiny model they
agree to ~1e-6 of a loss or a tensor's scale (cf. tests/test_gpt2.py); the printed loss has 6
decimals (5e-7 absolute of a loss of ~4.6) and the norm 4 (5e-5 absolute).
"""
import contextlib
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_gpt2
from llmpy import cpu
from llmpy.dataloader import DataLoader
from llmpy.gpt2 import GPT2
from llmpy.shards import write_datafile
from llmpy.checkpoint import read_model, read_state, write_model
from llmpy.testing.compare import assert_close
from llmpy.testing.torch_gpt2 import TorchGPT2
from tests.helpers import terminal
from tests.test_gpt2 import TINY, random_params

B, T, STEPS, LR, WD, CLIP = 2, 16, 7, 1e-3, 0.1, 1.0     # CLIP: train_gpt2.py's, as llm.c's
VAL_BATCHES = 3
ROUND = B * T
# two train shards, each ending where a batch boundary is tightest: the first has 4 * 32 tokens,
# 3 batches and 32 tokens short of the 33 a 4th needs; the second exactly 3 batches (3 * 32 + 1);
# steps 4-6 read the second shard, step 7 the first one again
TRAIN_SHARD_TOKENS = (4 * ROUND, 3 * ROUND + 1)
VAL_TOKENS = 5 * ROUND + 1

STEP_LINE = re.compile(r"^step +(\d+)/\d+ \| loss (\S+) \| norm (\S+) \|", re.M)
VAL_LINE = re.compile(r"^val loss (\S+)$", re.M)


def llm_c_batches(shards, n):
    """llm.c's data order (no shuffling) for one process: consecutive B*T slices of each shard
    from its start, targets shifted by one, a shard left once its next slice + 1 would not fit."""
    out = []
    while len(out) < n:
        for tokens in shards:
            for start in range(0, len(tokens) - ROUND, ROUND):
                buf = tokens[start:start + ROUND + 1]
                out.append((buf[:-1].reshape(B, T), buf[1:].reshape(B, T)))
    return out[:n]


def torch_val_loss(model, val_tokens):
    with torch.no_grad():
        losses = [model(x, y)[1].item() for x, y in llm_c_batches([val_tokens], VAL_BATCHES)]
    return sum(losses) / VAL_BATCHES


@pytest.fixture
def run(tmp_path):
    """train_gpt2.main on the tiny model for 7 steps, and the torch reference on the same data.
    Once per test (a few seconds), not once per module: mutmut credits the calls a fixture makes
    to the test that set it up, so a shared run would map train_gpt2's functions to one test."""
    tmp = tmp_path
    rng = np.random.default_rng(11)
    shards = [rng.integers(0, TINY.vocab_size, n) for n in TRAIN_SHARD_TOKENS]
    val_tokens = rng.integers(0, TINY.vocab_size, VAL_TOKENS)
    for i, tokens in enumerate(shards):
        write_datafile(tmp / f"train_{i:03d}.bin", tokens)
    write_datafile(tmp / "val.bin", val_tokens)
    params = random_params(TINY, seed=12)
    write_model(tmp / "tiny.bin", TINY, params)

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        train_gpt2.main(["--device", "cpu", "-e", str(tmp / "tiny.bin"), "-i", str(tmp / "train_*.bin"),
                         "-j", str(tmp / "val.bin"), "-b", str(B), "-t", str(T), "-x", str(STEPS),
                         "-k", "constant", "-l", str(LR), "-c", str(WD), "-v", str(STEPS),
                         "-m", str(VAL_BATCHES), "-s", "0", "-n", str(STEPS), "-o", str(tmp / "out"),
                         "--shuffle", "0"])

    ref = TorchGPT2(TINY, params)
    opt = ref.adamw(lr=LR, weight_decay=WD)
    val_ref = [torch_val_loss(ref, val_tokens)]
    losses_ref, norms_ref = [], []
    for inputs, targets in llm_c_batches(shards, STEPS):
        opt.zero_grad()
        _, loss = ref(inputs, targets)
        loss.backward()
        norms_ref.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP).item())
        opt.step()
        losses_ref.append(loss.item())
    val_ref.append(torch_val_loss(ref, val_tokens))
    return dict(stdout=stdout.getvalue(), out=tmp / "out", ref=ref, opt=opt, losses_ref=losses_ref,
                norms_ref=norms_ref, val_ref=val_ref)


def test_printed_train_losses_of_steps_1_to_7_are_torch_adamws(run):
    printed = {int(m[1]): float(m[2]) for m in STEP_LINE.finditer(run["stdout"])}
    assert sorted(printed) == list(range(1, STEPS + 1))
    for step, loss_ref in enumerate(run["losses_ref"], start=1):
        assert abs(printed[step] - loss_ref) <= 1e-5 * loss_ref, f"step {step}: {printed[step]} vs {loss_ref}"


def test_printed_gradient_norms_are_torchs_before_clipping(run):
    printed = [float(m[3]) for m in STEP_LINE.finditer(run["stdout"])]
    assert max(run["norms_ref"]) > CLIP, "the reference never clips: the test would not see clipping"
    for step, (norm, norm_ref) in enumerate(zip(printed, run["norms_ref"], strict=True), start=1):
        assert abs(norm - norm_ref) <= 5e-5 + 1e-5 * norm_ref, f"step {step}: {norm} vs {norm_ref}"


def test_printed_val_losses_are_the_mean_over_m_batches_before_and_after_training(run):
    printed = [float(v) for v in VAL_LINE.findall(run["stdout"])]
    assert len(printed) == 2
    for val, val_ref in zip(printed, run["val_ref"]):
        assert abs(val - val_ref) <= 1e-5 * val_ref, f"{val} vs {val_ref}"


def test_checkpoint_weights_are_torch_adamws_after_the_last_step(run):
    cfg, params = read_model(run["out"] / f"model_{STEPS:08d}.bin")
    assert cfg == TINY
    assert_close(params, run["ref"].flat(), 1e-5, "weights")


def test_checkpoint_adamw_moments_are_torchs_after_the_last_step(run):
    state = read_state(run["out"] / f"state_{STEPS:08d}_00000.bin")
    assert state["step"] == STEPS
    opt, ref = run["opt"], run["ref"]
    for key, ours in (("exp_avg", state["m"]), ("exp_avg_sq", state["v"])):
        theirs = np.concatenate([opt.state[p][key].reshape(-1).numpy()
                                 for tensors in ref.ordered() for p in tensors])
        assert_close(ours, theirs, 1e-5, key)


# --- the val loss's progress bar (train_gpt2.evaluate, called directly)

def val_evaluation(tmp_path, rank=0, world=1):
    """(model, loader) of the tiny model and a val shard for train_gpt2.evaluate, the loader
    process `rank`'s of `world`."""
    write_datafile(tmp_path / "val.bin", np.random.default_rng(13).integers(0, TINY.vocab_size, VAL_TOKENS))
    model = GPT2(TINY, cpu, B, T, params=random_params(TINY, seed=14))
    return model, DataLoader(str(tmp_path / "val.bin"), B, T, rank, world, vocab_size=TINY.vocab_size)


def test_on_a_terminal_rank_0_draws_a_val_loss_bar_of_its_batches(tmp_path):
    model, loader = val_evaluation(tmp_path)
    with terminal() as screen:
        train_gpt2.evaluate(model, loader, VAL_BATCHES, lambda: None)
    # tqdm's first frame, before any batch
    assert screen.getvalue().split("\r")[1] == "val loss:   0%|          | 0/3 [00:00<?, ?batch/s]"


def test_other_ranks_draw_no_val_loss_bar(tmp_path):
    # the second of two processes, its loader reading its share of each batch
    model, loader = val_evaluation(tmp_path, rank=1, world=2)
    model.comm = SimpleNamespace(rank=1, world=2, sum=lambda total: 2 * total)
    with terminal() as screen:
        train_gpt2.evaluate(model, loader, VAL_BATCHES, lambda: None)
    assert screen.getvalue() == ""
