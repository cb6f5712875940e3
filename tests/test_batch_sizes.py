"""train_gpt2.batch_sizes: the micro-batch a run starts with and its total batch in tokens, from
-b, -d, -t and the number of processes, checked in-process (tests/test_train.py runs the program
with these flags and reads its lines). The expected numbers are written out: -d is the total
batch; without it one micro-step of every process; -b auto starts at the largest divisor of the
per-process sequences up to 64 (llm.c's micro-batch for GPT-2 124M at T = 1024), or at a resumed
checkpoint's B where that divides them."""
import pytest

import train_gpt2
from llmpy import LlmpyError
from llmpy.config import from_descriptor

D12 = from_descriptor("d12")        # max_seq_len 1024


def sizes(*flags, world=1, resume_B=None):
    args = train_gpt2.parse_args([str(f) for f in flags])
    return train_gpt2.batch_sizes(args, D12, world, resume_B=resume_B)


def test_a_fixed_batch_without_total_is_one_micro_step_of_every_process():
    assert sizes("-b", 8, "-t", 256) == (8, 8 * 256)
    assert sizes("-b", 8, "-t", 256, world=3) == (8, 8 * 256 * 3)


def test_a_fixed_batch_with_a_total_keeps_the_total():
    assert sizes("-b", 8, "-t", 256, "-d", 8 * 256 * 3 * 4, world=3) == (8, 8 * 256 * 3 * 4)


def test_a_total_that_is_not_whole_micro_steps_names_b_t_and_processes():
    with pytest.raises(LlmpyError, match=r"-d 6144 is not a multiple of B\*T\*processes = 8\*256\*2 = 4096"):
        sizes("-b", 8, "-t", 256, "-d", 6144, world=2)
    with pytest.raises(LlmpyError, match="-d 1 is not a multiple"):
        sizes("-b", 8, "-t", 256, "-d", 1)


def test_auto_with_a_total_starts_at_the_largest_divisor_of_its_sequences_up_to_64():
    # 24,576 tokens over 2 processes of T = 128: 96 sequences each, whose divisors up to 64 end at 48
    assert sizes("-b", "auto", "-t", 128, "-d", 24576, world=2) == (48, 24576)
    # 36 sequences: all of them
    assert sizes("-b", "auto", "-t", 128, "-d", 36 * 128) == (36, 36 * 128)
    # one sequence of one token
    assert sizes("-b", "auto", "-t", 1, "-d", 1) == (1, 1)


def test_auto_without_a_total_takes_64_sequences_a_process():
    assert sizes("-b", "auto", "-t", 512, world=2) == (64, 64 * 512 * 2)


def test_auto_resumes_at_the_checkpoints_batch_where_it_divides_the_sequences():
    assert sizes("-b", "auto", "-t", 128, "-d", 96 * 128, resume_B=12) == (12, 96 * 128)
    # 96 sequences are not whole micro-batches of 20: the largest divisor up to 64 again
    assert sizes("-b", "auto", "-t", 128, "-d", 96 * 128, resume_B=20) == (48, 96 * 128)


def test_auto_with_a_total_that_is_not_whole_sequences_of_every_process_is_an_error():
    with pytest.raises(LlmpyError, match=r"-d 1000 is not a multiple of T\*processes = 128\*2 = 256"):
        sizes("-b", "auto", "-t", 128, "-d", 1000, world=2)
    with pytest.raises(LlmpyError, match="-d 1 is not a multiple"):
        sizes("-b", "auto", "-t", 128, "-d", 1)


def test_a_sequence_longer_than_the_models_is_an_error_naming_both():
    with pytest.raises(LlmpyError, match="-t 2048 is larger than the model's max sequence length 1024"):
        sizes("-b", 4, "-t", 2048)
    with pytest.raises(LlmpyError, match="-t 2048"):
        sizes("-b", "auto", "-t", 2048)
