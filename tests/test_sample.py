"""sample_gpt2.py as a user runs it: a real subprocess on model files and folders made here.

The HellaSwag chooser model (tests/test_hellaswag.py) predicts "banana" after anything, so a
greedy sample's text is known; a random tiny model with GPT-2's vocabulary gives real sampling.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmpy.shards import write_datafile
from llmpy.checkpoint import write_model
from tests.helpers import run_program
from tests.test_gpt2 import TINY, random_params
from tests.test_hellaswag import CHOOSER, chooser_params
from tests.test_train import TINY_GPT2_VOCAB, assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True):
    return run_program("sample_gpt2.py", *args, check=check)


@pytest.fixture
def chooser(tmp_path):
    write_model(tmp_path / "chooser.bin", CHOOSER, chooser_params())
    return tmp_path / "chooser.bin"


@pytest.fixture
def random_gpt2_vocab(tmp_path):
    """A random model with GPT-2's vocabulary and max_seq_len 16."""
    write_model(tmp_path / "random.bin", TINY_GPT2_VOCAB, random_params(TINY_GPT2_VOCAB, seed=0))
    return tmp_path / "random.bin"


def test_continues_the_prompt_from_an_llm_c_model_file(chooser):
    r = run("-e", chooser, "--prompt", "A man", "-g", 3, "--top_k", 1)
    assert r.stdout == "A man banana banana banana\n---\n"


def test_continues_the_prompt_from_a_training_runs_output_folder(chooser, tmp_path):
    write_datafile(tmp_path / "train.bin", np.random.default_rng(0).integers(0, 50257, 3000))
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", "-e", str(chooser),
                    "-i", str(tmp_path / "train.bin"), "-j", str(tmp_path / "train.bin"), "-b", "4", "-t", "32",
                    "-x", "2", "-l", "0", "-v", "0", "-s", "0", "-n", "2", "-o", str(tmp_path / "out")],
                   check=True, capture_output=True, cwd=ROOT)          # -l 0: the weights stay the chooser's
    r = run("-e", tmp_path / "out", "--prompt", "A man", "-g", 3, "--top_k", 1)
    assert r.stdout == "A man banana banana banana\n---\n"


def test_prints_num_samples_samples_each_followed_by_a_separator(chooser):
    r = run("-e", chooser, "--prompt", "A man", "-g", 2, "--top_k", 1, "--num_samples", 3)
    assert r.stdout == "A man banana banana\n---\n" * 3


def samples(stdout):
    return stdout.split("\n---\n")[:-1]


def test_the_cache_and_full_recomputation_print_the_same_samples(random_gpt2_vocab):
    """Sampled at temperature 1 over the whole vocabulary, past the model's 16 positions."""
    flags = ["-e", random_gpt2_vocab, "--prompt", "Once upon a time", "-g", 24, "--num_samples", 2, "--seed", 3]
    cached = run(*flags, "--kv_cache", 1).stdout
    assert len(samples(cached)) == 2 and cached == run(*flags, "--kv_cache", 0).stdout


def test_the_seed_picks_the_samples(random_gpt2_vocab):
    seed_1, seed_1_again, seed_2 = (run("-e", random_gpt2_vocab, "-g", 8, "--seed", s).stdout for s in (1, 1, 2))
    assert seed_1 == seed_1_again != seed_2


def test_tokens_per_second_go_to_stderr(chooser):
    for flag, how in ((1, "with the key/value cache"), (0, "the whole context recomputed for each token")):
        r = run("-e", chooser, "-g", 3, "--num_samples", 2, "--kv_cache", flag)
        assert re.fullmatch(rf"6 tokens in [\d.]+ s: [\d.]+ tokens/s on cpu, {how}\n", r.stderr), r.stderr


def test_the_cpu_samples_with_the_cache_by_default(chooser):
    assert run("-e", chooser, "-g", 3).stderr.endswith(", with the key/value cache\n")


# --- bad input: one line on stderr that names the flag or file, no traceback

BAD_VALUES = [
    (["-g", 0], ["-g 0"]),
    (["-g", -5], ["-g -5"]),
    (["-g", "many"], ["-g", "many"]),
    (["--num_samples", 0], ["--num_samples 0"]),
    (["--temperature", 0], ["--temperature 0"]),
    (["--temperature", -1], ["--temperature -1"]),
    (["--temperature", "inf"], ["--temperature inf"]),
    (["--top_k", -1], ["--top_k -1"]),
    (["--kv_cache", 2], ["--kv_cache", "2"]),
]


@pytest.mark.parametrize("flags, words", [pytest.param(f, w, id=" ".join(map(str, f))) for f, w in BAD_VALUES])
def test_bad_flag_value_is_a_one_line_error_naming_it(chooser, flags, words):
    assert_one_line_error(run("-e", chooser, *flags, check=False), *words)


def test_no_model_is_an_error_naming_e():
    assert_one_line_error(run("-g", 3, check=False), "-e")


def test_missing_model_file_is_an_error_naming_it(tmp_path):
    assert_one_line_error(run("-e", tmp_path / "nope.bin", check=False), "nope.bin")


def test_output_folder_without_a_complete_checkpoint_is_an_error(chooser, tmp_path):
    (tmp_path / "out").mkdir()
    chooser.rename(tmp_path / "out" / "model_00000002.bin")        # its DONE_00000002 never written
    assert_one_line_error(run("-e", tmp_path / "out", check=False), str(tmp_path / "out"), "no complete checkpoint")


def test_model_without_gpt2s_vocabulary_is_an_error(tmp_path):
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    assert_one_line_error(run("-e", tmp_path / "tiny.bin", check=False), "tiny.bin", "vocabulary of 97", "50257")
