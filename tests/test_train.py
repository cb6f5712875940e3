"""train_gpt2.py as a user runs it: a real subprocess on small shards and model files made here."""
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dev.data.data_common import write_datafile
from llmpy.checkpoint import write_model
from llmpy.config import GPT2Config, from_descriptor, param_shapes
from tests.test_gpt2 import TINY, random_params
from tests.torch_gpt2 import TorchGPT2

ROOT = Path(__file__).resolve().parents[1]
STEP_LINE = re.compile(r"^step +(\d+)/(\d+) \| loss (\S+) \| norm (\S+) \| lr (\S+) \| (\S+) ms \| (\d+) tok/s$")


def run(*args, check=True):
    r = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def losses(stdout):
    return {int(m[1]): m[3] for m in map(STEP_LINE.match, stdout.splitlines()) if m}


@pytest.fixture
def tiny_run(tmp_path):
    """A tiny model file and train/val shards of tokens in its vocabulary; returns the flags."""
    rng = np.random.default_rng(0)
    write_datafile(tmp_path / "train.bin", rng.integers(0, TINY.vocab_size, 4000))
    write_datafile(tmp_path / "val.bin", rng.integers(0, TINY.vocab_size, 1000))
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    return ["-e", tmp_path / "tiny.bin", "-i", tmp_path / "train.bin", "-j", tmp_path / "val.bin",
            "-b", 2, "-t", 16, "-s", 0]


def test_step_lines_have_llm_c_form_and_loss_falls(tiny_run):
    r = run(*tiny_run, "-x", 30, "-l", 3e-3, "-v", 10, "-m", 2, "-a", 1)
    lines = [line for line in r.stdout.splitlines() if line.startswith("step")]
    assert len(lines) == 30 and all(STEP_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("step    1/30 | loss ")
    loss = losses(r.stdout)
    assert float(loss[30]) < 0.5 * float(loss[1])       # -a 1: one batch, overfit
    assert len(re.findall(r"^val loss \d+\.\d{6}$", r.stdout, re.M)) == 4   # steps 0, 10, 20, 30


def test_main_log_has_llm_c_lines(tiny_run, tmp_path):
    run(*tiny_run, "-x", 4, "-v", 2, "-m", 1, "-o", tmp_path / "out")
    log = (tmp_path / "out" / "main.log").read_text().splitlines()
    assert log[0].startswith("s:0 tel:")
    assert re.fullmatch(r"s:1 trl:\d+\.\d+ lr:\S+ norm:\S+", log[1])
    assert sum(line.startswith("s:") and "trl:" in line for line in log) == 4


def test_resumed_run_prints_the_same_losses_bit_for_bit(tiny_run, tmp_path):
    flags = [*tiny_run, "-x", 6, "-v", 0, "-l", 1e-3, "-o", tmp_path / "out", "-n", 3]
    full = losses(run(*flags).stdout)
    (tmp_path / "out" / "DONE_00000006").unlink()         # as if killed after step 3's checkpoint
    resumed = run(*flags, "-y", 1)
    assert "resumed from step 3" in resumed.stdout
    assert losses(resumed.stdout) == {k: full[k] for k in (4, 5, 6)}


def test_gradient_accumulation_trains_like_the_big_batch(tiny_run):
    big = losses(run(*tiny_run, "-b", 4, "-x", 3, "-v", 0).stdout)
    accumulated = run(*tiny_run, "-d", 64, "-x", 3, "-v", 0)       # 2 micro-steps of B=2
    assert "2 micro-steps" in accumulated.stdout
    for step, loss in losses(accumulated.stdout).items():
        assert abs(float(loss) - float(big[step])) < 2e-6, step


def independent_model_file(path, cfg, params):
    """An llm.c model file written with struct and raw bytes, not llmpy's writer."""
    header = [20240326, 3, cfg.max_seq_len, cfg.vocab_size, cfg.num_layers, cfg.num_heads,
              cfg.channels, cfg.padded_vocab_size] + [0] * 248
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(params.astype("<f4").tobytes())


def test_d12_llm_c_file_loads_and_first_loss_matches_torch(tmp_path):
    cfg = from_descriptor("d12")
    params = random_params(cfg, seed=3)
    independent_model_file(tmp_path / "d12.bin", cfg, params)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, 1000)
    write_datafile(tmp_path / "train.bin", tokens)
    r = run("-e", tmp_path / "d12.bin", "-i", tmp_path / "train.bin", "-b", 2, "-t", 64,
            "-x", 1, "-v", 0, "-s", 0)
    inputs, targets = tokens[:128].reshape(2, 64), tokens[1:129].reshape(2, 64)
    with torch.no_grad():
        _, loss_ref = TorchGPT2(cfg, params)(inputs, targets)
    assert abs(float(losses(r.stdout)[1]) - loss_ref.item()) < 1e-5 * loss_ref.item()


# --- bad input: one line on stderr that names the flag or file, no traceback

def assert_one_line_error(r, *words):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_unknown_flag_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-zz", 1, check=False), "-zz")


def test_sequence_longer_than_the_model_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-t", 32, check=False), "-t 32", "16")


def test_total_batch_not_a_multiple_of_micro_batch_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-d", 100, check=False), "-d 100", "32")


def test_missing_model_file_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "-e", tmp_path / "nope.bin", check=False), "nope.bin")


def test_truncated_model_file_is_an_error(tiny_run, tmp_path):
    path = tmp_path / "tiny.bin"
    path.write_bytes(path.read_bytes()[:-100])
    assert_one_line_error(run(*tiny_run, check=False), str(path), "truncated")


def test_missing_data_file_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "-i", tmp_path / "none.bin", check=False), "none.bin")


def test_checkpointing_without_output_folder_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-n", 5, check=False), "-o")


def test_resume_without_checkpoint_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "-y", 1, "-o", tmp_path / "empty", check=False), "-y 1")
