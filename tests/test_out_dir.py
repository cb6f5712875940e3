"""The output folder belongs to one run (refused to a fresh run that would mix with another,
locked while a run writes into it, pruned by exact checkpoint names only), and -y 1 resumes it
saying exactly what changed, falling back to an older checkpoint where the newest cannot be read."""
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import train_gpt2
from llmpy import LlmpyError, cpu, outdir
from llmpy.checkpoint import write_model
from llmpy.config import GPT2Config
from llmpy.distributed import Comm
from tests.test_gpt2 import TINY, random_params
from tests.test_train import ROOT, assert_one_line_error, losses, run


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".llmpy.lock"}


def test_a_fresh_run_refuses_a_folder_holding_another_run_s_checkpoints(tiny_run, tmp_path):
    out = tmp_path / "out"
    run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-n", 2)
    before = files(out)
    r = run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-n", 2, check=False)
    assert_one_line_error(r, f"-o {out}: holds another run's checkpoints of steps 2, 4 and a main.log",
                          "resume that run with -y 1")
    assert files(out) == before


def test_a_fresh_run_refuses_a_folder_holding_another_run_s_main_log(tiny_run, tmp_path):
    run(*tiny_run, "-x", 1, "-v", 0, "-o", tmp_path / "out")
    assert_one_line_error(run(*tiny_run, "-x", 1, "-v", 0, "-o", tmp_path / "out", check=False),
                          "holds another run's a main.log")


def test_pruning_deletes_only_exact_checkpoint_names(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    users = ["state_00000002_00000.orig.bin", "model_00000002.bin.bak", "notes.txt"]
    for name in users:
        (out / name).write_text("a user's file")
    run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-n", 2, "-nk", 1)
    assert not (out / "model_00000002.bin").exists() and (out / "DONE_00000004").exists()
    assert all((out / name).read_text() == "a user's file" for name in users)


def test_pruning_says_each_checkpoint_it_deletes_with_the_flags_that_deleted_it(tiny_run, tmp_path):
    def deleted(*flags):
        r = run(*tiny_run, "-v", 0, "-n", 1, "-nk", 1, *flags)
        return [line for line in r.stdout.splitlines() if line.startswith("checkpoint deleted")]
    # the newest one kept, and with -nm 2 every even step
    assert deleted("-x", 4, "-o", tmp_path / "major", "-nm", 2) == ["checkpoint deleted: step 1 (-nk 1 -nm 2)",
                                                                    "checkpoint deleted: step 3 (-nk 1 -nm 2)"]
    assert deleted("-x", 3, "-o", tmp_path / "newest") == ["checkpoint deleted: step 1 (-nk 1)",
                                                          "checkpoint deleted: step 2 (-nk 1)"]


def claim(out, rank=0, *flags):
    """claim_out_dir for -o out as process `rank`: (the lock file or None, the lines it said)."""
    said = []
    lock = train_gpt2.claim_out_dir(train_gpt2.parse_args(["-o", str(out), *flags]),
                                    SimpleNamespace(rank=rank, say=said.append))
    if lock:
        lock.close()
    return lock, said


def test_a_resumed_run_removes_the_temp_files_a_crash_left_of_complete_checkpoints_saying_so(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ["DONE_00000002", "model_00000002.bin", "state_00000002_00000.bin", "model_00000002.bin.tmp",
                 "model_00000004.bin.tmp"]:                  # checkpoint 4 is not complete: its temp stays
        (out / name).write_bytes(b"x")
    lock, said = claim(out, 0, "-y", "1")
    assert lock is not None
    assert said == ["removed model_00000002.bin.tmp: left by a crash while its checkpoint was written again"]
    assert not (out / "model_00000002.bin.tmp").exists() and (out / "model_00000004.bin.tmp").exists()


def test_only_rank_0_locks_and_checks_the_folder_the_others_only_make_it(tmp_path):
    out = tmp_path / "out"
    assert claim(out, 1) == (None, []) and os.listdir(out) == []
    (out / "main.log").write_text("another run's")             # a fresh run's folder is rank 0's to check
    assert claim(out, 1) == (None, [])
    with pytest.raises(LlmpyError, match="main.log"):
        claim(out, 0)


def test_a_folder_that_cannot_be_locked_is_written_unlocked_saying_so(tmp_path, monkeypatch):
    def no_locks(f, how):
        raise OSError(37, "No locks available")
    monkeypatch.setattr(outdir.fcntl, "flock", no_locks)
    out = tmp_path / "out"
    assert claim(out) == (None, [f"-o {out}: cannot lock {out / '.llmpy.lock'} (No locks available): nothing "
                                 "stops a second run from writing here"])


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tiny_run, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu",
                              *map(str, [*tiny_run, "-x", 4, "-v", 0, "-o", out, "-n", 1, "--watchdog", 0])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "LLMPY_FAULT": "stall:step=2:rank=0:seconds=60"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "DONE_00000001").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-y", 1, check=False)
        assert_one_line_error(r, f"-o {out}: another run is writing into this folder (process {first.pid} on ",
                              f"holds {out / '.llmpy.lock'}")
    finally:
        first.kill()
        first.communicate()
    assert "resumed from step 1" in run(*tiny_run, "-x", 2, "-v", 0, "-o", out, "-y", 1).stdout


# --- resume: what changed

def test_resuming_with_another_total_batch_is_an_error_naming_the_d_that_resumes(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    r = run(*tiny_run, "-b", 4, "-x", 4, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False)
    assert_one_line_error(r, "total batch of 32 tokens, this one 64 (-b 4 -t 16 -d -1); give -d 32 to resume it")


def test_resuming_with_another_b_and_the_same_total_batch_says_so_and_trains_alike(tiny_run, tmp_path):
    # in file order (--shuffle 0): a shuffled order is one of samples of B rows, fixed at the start
    full = losses(run(*tiny_run, "--shuffle", 0, "-x", 4, "-v", 0, "-o", tmp_path / "a", "-n", 2).stdout)
    (tmp_path / "a" / "DONE_00000004").unlink()
    r = run(*tiny_run, "--shuffle", 0, "-b", 1, "-d", 32, "-x", 4, "-v", 0, "-o", tmp_path / "a", "-y", 1)
    assert "resuming with B=1 where the checkpoint had B=2: the same data" in r.stdout
    for step, loss in losses(r.stdout).items():
        assert abs(float(loss) - float(full[step])) < 1e-5, step


def test_resuming_with_another_model_is_an_error_naming_both(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    wider = GPT2Config(max_seq_len=16, vocab_size=97, padded_vocab_size=128, num_layers=2, num_heads=4, channels=64)
    write_model(tmp_path / "wider.bin", wider, random_params(wider, seed=0))
    r = run(*tiny_run, "-e", tmp_path / "wider.bin", "-x", 4, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False)
    assert_one_line_error(r, f"-e {tmp_path / 'wider.bin'}", "C=64", f"C={TINY.channels}")


def test_resuming_with_a_descriptor_for_e_checks_it_against_the_checkpoint_s_model():
    args = train_gpt2.parse_args(["-e", "d6", "-o", "out", "-y", "1"])
    train_gpt2.check_resumed_model(args, GPT2Config(num_layers=6, channels=384, num_heads=6))     # d6's shape
    with pytest.raises(LlmpyError) as error:
        train_gpt2.check_resumed_model(args, GPT2Config(num_layers=12, channels=768, num_heads=12))
    assert "-y 1: the checkpoint in out holds a " in str(error.value)
    assert all(word in str(error.value) for word in ("C=768", "-e d6", "C=384"))


def test_resuming_with_another_schedule_says_which_flags_changed(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-l", 1e-3, "-o", tmp_path / "out", "-n", 2)
    r = run(*tiny_run, "-x", 4, "-v", 0, "-l", 2e-3, "-o", tmp_path / "out", "-y", 1)
    assert ("-y 1: resuming with -l 0.002 (was 0.001), -x 4 (was 2): from step 2 on, the learning rate and "
            "weight decay follow this run's flags") in r.stdout


@pytest.mark.parametrize("x, steps, said", [(2, 2, "-x 2: "), (-1, 125, "-x -1 (one epoch: 125 steps): ")])
def test_max_steps_at_or_below_the_resumed_step_is_an_error(tiny_run, tmp_path, x, steps, said):
    # one epoch: 4,000 tokens // 32 a step
    run(*tiny_run, "-x", steps, "-v", 0, "-o", tmp_path / "out", "-n", steps)
    assert_one_line_error(run(*tiny_run, "-x", x, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False),
                          said + "the checkpoint in", f"is at step {steps} already; give a larger -x to train on")


# --- fallback

def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tiny_run, tmp_path):
    out = tmp_path / "out"
    full = losses(run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-n", 2).stdout)
    newest = out / "model_00000004.bin"
    newest.write_bytes(newest.read_bytes()[:-4])
    r = run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-y", 1)
    assert f"-y 1: checkpoint 4: {newest}: file is " in r.stdout and "; falling back to checkpoint 2\n" in r.stdout
    assert "resumed from step 2" in r.stdout
    assert losses(r.stdout) == {k: full[k] for k in (3, 4)}


def test_a_fresh_run_reads_no_checkpoint_and_says_nothing_of_resuming(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "DONE_00000002").write_bytes(b"")           # a complete checkpoint's marker: only -y 1 reads it
    assert train_gpt2.load_checkpoint(train_gpt2.parse_args(["-o", str(out)]), Comm(cpu)) == (None, None, None, None)
    monkeypatch.chdir(out)                              # nor, without -o, the working folder's
    assert train_gpt2.load_checkpoint(train_gpt2.parse_args([]), Comm(cpu)) == (None, None, None, None)
    assert capsys.readouterr().out == ""


def test_no_readable_checkpoint_is_a_one_line_error(tiny_run, tmp_path):
    out = tmp_path / "out"
    run(*tiny_run, "-x", 2, "-v", 0, "-o", out, "-n", 2)
    (out / "state_00000002_00000.bin").write_bytes(b"")
    assert_one_line_error(run(*tiny_run, "-x", 4, "-v", 0, "-o", out, "-y", 1, check=False),
                          "-y 1: checkpoint 2: ", "no older complete checkpoint to fall back to")
