"""The lines a run starts with, as llm.c prints its allocations and batch at start: the model's
shape and parameter count, each buffer's memory, the batch and its data, and what a checkpoint
costs on disk. Every number is worked out here from the model's shape and the flags."""
import contextlib
import io

import pytest

import train_gpt2
from llmpy.checkpoint import write_model
from llmpy.config import GPT2Config
from tests.test_gpt2 import TINY, random_params

# wide enough that each buffer is several MiB, so that the line's units show
WIDE = GPT2Config(max_seq_len=16, vocab_size=97, padded_vocab_size=128, num_layers=2, num_heads=4, channels=256)


def gpt2_parameters(cfg):
    """GPT-2's parameter count: the token and position embeddings, per layer two layernorms
    (2C each), qkv (3C² + 3C), the attention projection (C² + C), the MLP (4C² + 4C and 4C² + C),
    and the final layernorm."""
    C = cfg.channels
    return cfg.padded_vocab_size * C + cfg.max_seq_len * C + cfg.num_layers * (12 * C * C + 13 * C) + 2 * C


def start_lines(*flags):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        train_gpt2.main(["--device", "cpu", *map(str, flags)])
    return stdout.getvalue().splitlines()


def line(lines, prefix):
    found = [text for text in lines if text.startswith(prefix)]
    assert len(found) == 1, lines
    return found[0]


@pytest.fixture
def wide_run(tiny_run, tmp_path):
    """tiny_run's data and flags with the WIDE model."""
    write_model(tmp_path / "wide.bin", WIDE, random_params(WIDE, seed=0))
    return [*tiny_run, "-e", tmp_path / "wide.bin"]


def test_the_model_line_names_its_shape_parameter_count_and_device(tiny_run):
    lines = start_lines(*tiny_run, "-x", 1, "-v", 0)
    assert gpt2_parameters(TINY) == 30_080
    assert line(lines, "model:") == ("model: L=2 C=32 NH=4 maxT=16 V=97 Vp=128 | 30,080 parameters | "
                                     "device cpu | recompute 0")
    assert lines[0].startswith("model:")


def test_the_memory_line_gives_each_buffer_in_mib(wide_run):
    n = gpt2_parameters(WIDE)
    mib = n * 4 / 2**20     # fp32 on the CPU
    assert round(mib) == 6
    memory = line(start_lines(*wide_run, "-x", 1, "-v", 0), "memory:")
    assert memory.startswith(f"memory: parameters {mib:.0f} MiB | gradients {mib:.0f} MiB | "
                             f"AdamW m, v {2 * mib:.0f} MiB | activations ")
    assert memory.endswith(" MiB")


@pytest.mark.parametrize("shuffle, order", [(0, "in file order"), (1, "shuffled")])
def test_the_batch_line_gives_the_micro_steps_data_order_steps_and_val_batches(tiny_run, shuffle, order):
    # 2 micro-steps of 2 x 16 tokens; -m 3 of the 31 val batches the file holds (1,000 tokens // 32)
    lines = start_lines(*tiny_run, "-d", 64, "-x", 2, "-v", 1, "-m", 3, "--shuffle", shuffle)
    assert line(lines, "batch:") == (f"batch: B=2 T=16 | total 64 tokens = 2 micro-steps | train 4,000 tokens, "
                                     f"{order} | 2 steps | val 3 batches")


@pytest.mark.parametrize("flags, steps", [(["-x", 1], 1), ([], 62)])     # one epoch: 4,000 tokens // 64
def test_x_is_the_number_of_steps_and_without_it_one_epoch(tiny_run, flags, steps):
    lines = start_lines(*tiny_run, "-d", 64, "-v", 0, *flags)
    assert f"| {steps} steps |" in line(lines, "batch:")
    assert line(lines, "done:").startswith(f"done: {steps} steps, {steps * 64:,} tokens")


def test_the_out_dir_line_gives_what_each_checkpoint_costs_on_disk(wide_run, tmp_path):
    n = gpt2_parameters(WIDE)
    out = tmp_path / "out"
    lines = start_lines(*wide_run, "-x", 1, "-v", 0, "-o", out, "-n", 5, "-nk", 2)
    # the model file in fp32, and AdamW's m and v
    assert line(lines, "writing ") == (f"writing {out / 'main.log'} | a checkpoint every 5 steps: "
                                       f"{n * 4 / 1e6:.0f} MB model + {n * 8 / 1e6:.0f} MB state, keeping the newest 2")
