"""The lines a run starts with, as llm.c prints its allocations and batch at start: the model's
shape and parameter count, each buffer's memory, the batch and its data, and what a checkpoint
costs on disk. Every number is worked out here from the model's shape and the flags."""
import contextlib
import io
import os
from types import SimpleNamespace

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


def test_the_out_dir_line_without_n_is_main_log_alone_and_without_nk_keeps_all(tiny_run, tmp_path):
    out = tmp_path / "out"
    assert line(start_lines(*tiny_run, "-x", 1, "-v", 0, "-o", out), "writing ") == f"writing {out / 'main.log'}"
    n = gpt2_parameters(TINY)
    lines = start_lines(*tiny_run, "-x", 1, "-v", 0, "-o", tmp_path / "out1", "-n", 1)
    assert line(lines, "writing ") == (f"writing {tmp_path / 'out1' / 'main.log'} | a checkpoint every 1 steps: "
                                       f"{n * 4 / 1e6:.0f} MB model + {n * 8 / 1e6:.0f} MB state, keeping all (-nk)")


def sized_run(params, grads, acts, m, v, master=None):
    """A model and its optimizer as memory_report reads them: each buffer only its bytes."""
    def sized(nbytes):
        return None if nbytes is None else SimpleNamespace(nbytes=nbytes)
    return (SimpleNamespace(params_flat=sized(params), grads_flat=sized(grads), acts_bytes=sized(acts)),
            SimpleNamespace(m=sized(m), v=sized(v), master=sized(master)))


def test_master_weights_are_a_buffer_and_part_of_every_process_s_checkpoint_state():
    # a GPU's bf16 run: 2-byte weights and gradients (its model file is bf16 too), fp32 AdamW m and v and
    # master weights
    n = 500_000
    model, optimizer = sized_run(params=2 * n, grads=2 * n, acts=12_345, m=4 * n, v=4 * n, master=4 * n)
    assert train_gpt2.memory_report(model, optimizer) == {
        "parameters": 1_000_000, "gradients": 1_000_000, "AdamW m, v": 4_000_000, "activations": 12_345,
        "master weights": 2_000_000}
    args = SimpleNamespace(out_dir="out", checkpoint_every=5, checkpoints_keep=3)
    # each of 2 processes' state file: m, v and master weights, 6 MB
    assert train_gpt2.where_it_writes(args, model, optimizer, 2) == (
        f"writing {os.path.join('out', 'main.log')} | a checkpoint every 5 steps: 1 MB model + 12 MB state, "
        "keeping the newest 3")


def test_a_checkpoints_megabytes_are_its_exact_bytes_rounded():
    """The out line's MB are the byte counts / 10^6 rounded to whole MB (half to even), with
    nothing added: 1,500,000 bytes of model show 2 MB, 3,499,999 bytes of state (no master
    weights, one process) 3 MB, the same state with a byte more 4 MB."""
    args = SimpleNamespace(out_dir="out", checkpoint_every=1, checkpoints_keep=0)
    for m_and_v, megabytes in [(3_499_999, 3), (3_500_000, 4)]:
        model, optimizer = sized_run(params=1_500_000, grads=0, acts=0, m=m_and_v // 2, v=m_and_v - m_and_v // 2)
        assert train_gpt2.where_it_writes(args, model, optimizer, 1).endswith(
            f"2 MB model + {megabytes} MB state, keeping all (-nk)")


# the val file's 1,000 tokens hold 31 batches of 2 x 16 (1,000 // 32)
@pytest.mark.parametrize("flags, batches", [(["-v", 0], 0), (["-v", 1, "-m", -1], 31), (["-v", 1, "-m", 50], 31)])
def test_the_batch_line_has_no_val_batches_without_val_loss_and_at_most_what_the_val_file_holds(tiny_run, flags,
                                                                                               batches):
    lines = start_lines(*tiny_run, "-x", 2, *flags)
    assert line(lines, "batch:").endswith(f"| 2 steps | val {batches} batches")


def test_each_of_two_processes_reads_its_share_so_the_val_file_holds_half_the_batches(tiny_run):
    args = train_gpt2.parse_args([*map(str, tiny_run), "-m", "-1"])
    train, val, batches = train_gpt2.data_loaders(args, TINY, 2, SimpleNamespace(rank=1, world=2))
    assert (train.rank, train.world, val.rank, val.world) == (1, 2, 1, 2)
    assert batches == 1000 // (2 * 16 * 2)
