"""train_gpt2.save_checkpoint in-process: what a checkpoint is (the model file, in the dtype the
model trains in, the state file with any master weights, then its DONE marker and a line), and a
write it refuses (a NaN or inf about to be saved): one line naming the tensor and the newest
complete checkpoint, no file of the refused step left, the complete one untouched."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt2
from llmpy import LlmpyError
from llmpy.checkpoint import HEADER_BYTES, checkpoint_paths, complete_checkpoint_steps, read_model, read_state
from llmpy.config import num_parameters
from tests.test_resume_state import STEP, master_weights, save_run

LATER = 2 * STEP


def save_again(out_dir, run, step=LATER):
    model, optimizer, loader, rng, _ = run
    train_gpt2.save_checkpoint(str(out_dir), step, model, optimizer, loader, rng, {"B": model.B})


def files(out_dir, step):
    return [p for p in checkpoint_paths(str(out_dir), step, rank=0) if os.path.exists(p)]


def contents(out_dir, step):
    """The bytes of each file of the checkpoint of `step` there is."""
    return {p: Path(p).read_bytes() for p in files(out_dir, step)}


def test_a_checkpoint_is_the_fp32_model_file_the_state_and_its_done_marker_then_a_line(tmp_path, capsys):
    _, (model, _, _, _, _), state = save_run(tmp_path)
    model_path, _ = checkpoint_paths(str(tmp_path), STEP, rank=0)
    assert complete_checkpoint_steps(str(tmp_path)) == [STEP] and state["step"] == STEP
    n = num_parameters(model.cfg)
    assert os.path.getsize(model_path) == HEADER_BYTES + 4 * n
    np.testing.assert_array_equal(read_model(model_path)[1], model.params_flat[:n])
    assert state["master"] is None
    assert capsys.readouterr().out.endswith(f".bin\ncheckpoint written: {model_path}\n")   # after the data's line


def test_with_master_weights_the_model_file_is_bf16_and_the_state_holds_them(tmp_path):
    # a GPU's bf16 run: the model file has the weights as the model holds them, in bf16
    _, run, _ = save_run(tmp_path)
    model, optimizer = run[:2]
    optimizer.master = master_weights(model)
    save_again(tmp_path, run)
    model_path, state_path = checkpoint_paths(str(tmp_path), LATER, rank=0)
    n = num_parameters(model.cfg)
    assert os.path.getsize(model_path) == HEADER_BYTES + 2 * n
    bf16 = torch.from_numpy(model.params_flat[:n].copy()).bfloat16().float().numpy()
    np.testing.assert_array_equal(read_model(model_path)[1], bf16)
    np.testing.assert_array_equal(read_state(state_path)["master"], optimizer.master)


def poison(run, what):
    model, optimizer = run[:2]
    if what == "master weights":
        optimizer.master = master_weights(model)
    array = {"weights": model.params_flat, "AdamW m": optimizer.m, "AdamW v": optimizer.v,
             "master weights": optimizer.master}[what]
    array[7] = np.inf


@pytest.mark.parametrize("what, named", [("weights", "wte"), ("AdamW m", "AdamW m"), ("AdamW v", "AdamW v"),
                                         ("master weights", "master weights")])
def test_a_non_finite_value_refuses_the_checkpoint_naming_it_and_the_newest_complete_one(tmp_path, what, named):
    _, run, _ = save_run(tmp_path)
    kept = contents(tmp_path, STEP)
    poison(run, what)
    with pytest.raises(LlmpyError) as refused:
        save_again(tmp_path, run)
    assert str(refused.value) == (f"checkpoint {LATER} not written (the newest complete one is step {STEP}): "
                                  f"step {LATER}: {named} holds inf at element 7: NaN and inf are not trainable values")
    assert files(tmp_path, LATER) == [] and complete_checkpoint_steps(str(tmp_path)) == [STEP]
    assert contents(tmp_path, STEP) == kept


def test_a_refused_first_checkpoint_says_there_is_no_complete_one_yet(tmp_path):
    _, run, _ = save_run(tmp_path)
    poison(run, "AdamW v")
    (tmp_path / "fresh").mkdir()
    with pytest.raises(LlmpyError, match=rf"^checkpoint {LATER} not written \(no complete one yet\): step {LATER}: "):
        save_again(tmp_path / "fresh", run)
    assert os.listdir(tmp_path / "fresh") == []


def test_a_refused_rewrite_of_a_complete_checkpoint_keeps_its_files(tmp_path):
    # a run that fell back from an unreadable newest checkpoint writes that step again
    _, run, _ = save_run(tmp_path)
    kept = contents(tmp_path, STEP)
    poison(run, "AdamW m")
    with pytest.raises(LlmpyError, match=rf"^checkpoint {STEP} not written \(the newest complete one is step {STEP}\)"):
        save_again(tmp_path, run, step=STEP)
    assert contents(tmp_path, STEP) == kept
    assert complete_checkpoint_steps(str(tmp_path)) == [STEP]
