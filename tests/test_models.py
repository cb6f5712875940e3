"""-e, as llmpy/models.py reads it for train_gpt2.py and sample_gpt2.py: descriptors, llm.c model
files, Hugging Face folders and train_gpt2.py output folders."""
import re

import numpy as np
import pytest

from llmpy import LlmpyError
from llmpy.checkpoint import checkpoint_paths, write_done_marker, write_model
from llmpy.config import from_descriptor
from llmpy.hf import export_hf
from llmpy.models import load_model_params
from tests.test_gpt2 import TINY, random_params


def write_checkpoint(out_dir, step, params, done=True):
    """A checkpoint's model file as train_gpt2.py -o names it, and its DONE marker unless
    done is False (a run that stopped while writing it)."""
    write_model(checkpoint_paths(out_dir, step, rank=0)[0], TINY, params)
    if done:
        write_done_marker(out_dir, step)


def test_descriptor_gives_its_config_and_leaves_the_weights_to_the_caller():
    assert load_model_params("d6") == (from_descriptor("d6"), None)


def test_model_file_gives_its_config_and_weights(tmp_path):
    params = random_params(TINY, seed=0)
    write_model(tmp_path / "m.bin", TINY, params)
    cfg, loaded = load_model_params(str(tmp_path / "m.bin"))
    assert cfg == TINY and np.array_equal(loaded, params)


def test_folder_with_a_config_json_is_a_hugging_face_gpt2(tmp_path):
    params = random_params(TINY, seed=1)
    export_hf(TINY, params, tmp_path / "hf", tokenizer=False)
    cfg, loaded = load_model_params(str(tmp_path / "hf"))
    assert cfg == TINY and np.array_equal(loaded, params)


def test_output_folder_gives_its_newest_complete_checkpoint(tmp_path):
    newest_complete = random_params(TINY, seed=4)
    write_checkpoint(tmp_path, 2, random_params(TINY, seed=2))
    write_checkpoint(tmp_path, 4, newest_complete)
    write_checkpoint(tmp_path, 6, random_params(TINY, seed=6), done=False)
    cfg, loaded = load_model_params(str(tmp_path))
    assert cfg == TINY and np.array_equal(loaded, newest_complete)


def test_output_folder_without_a_complete_checkpoint_is_an_error(tmp_path):
    write_checkpoint(tmp_path, 2, random_params(TINY, seed=2), done=False)
    with pytest.raises(LlmpyError, match=re.escape(f"-e {tmp_path}: no complete checkpoint") + ".*DONE_"):
        load_model_params(str(tmp_path))


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(LlmpyError, match=re.escape(f"-e {tmp_path / 'nope.bin'}: no such model file or folder")):
        load_model_params(str(tmp_path / "nope.bin"))


def test_hf_dir_with_anything_but_an_openai_name_is_an_error(tmp_path):
    with pytest.raises(LlmpyError, match="--hf_dir goes with -e gpt2"):
        load_model_params("d6", hf_dir=str(tmp_path))
