"""What train_gpt2.py's checkpoint hands to a resumed run, checked directly (in-process) rather
than through the printed output of a resumed run (tests/test_train.py does that): a run saved
by save_checkpoint and taken up by resume_checkpoint in a fresh process's objects continues
with the sampling RNG's next draws, the data loader's next batches and AdamW's step count and
moments of the run that wrote it."""
import numpy as np
import pytest

import train_gpt2
from llmpy.shards import write_datafile
from llmpy import cpu
from llmpy.checkpoint import checkpoint_paths, read_state
from llmpy.dataloader import DataLoader
from llmpy.distributed import Comm
from llmpy.gpt2 import GPT2
from llmpy.optim import AdamW
from llmpy.outlier import OutlierDetector
from tests.test_gpt2 import TINY, random_params

B, T, STEP = 2, 16, 3


def fresh_run(data):
    """The objects a run builds before it resumes: model, optimizer, loader, RNG seeded as at
    start, outlier detectors."""
    params = random_params(TINY, seed=30)
    model = GPT2(TINY, cpu, B, T, params=params)
    return (model, AdamW(model, params), DataLoader(data, B, T, vocab_size=TINY.vocab_size),
            np.random.default_rng(42), {"loss": OutlierDetector(), "grad": OutlierDetector()})


@pytest.fixture
def saved(tmp_path):
    """A run that trained 3 steps, drew from its RNG and read 3 batches, then checkpointed;
    returns what it would do next and a fresh run resumed from the checkpoint."""
    data = str(tmp_path / "train.bin")
    write_datafile(data, np.random.default_rng(31).integers(0, TINY.vocab_size, 40 * B * T))
    model, optimizer, loader, rng, detectors = fresh_run(data)
    for step in range(STEP):
        model.zero_grad()
        model.forward(*loader.next_batch())
        model.backward()
        optimizer.update(1e-3)
        rng.random(5 + step)         # sampling draws a varying number of values
    extra = {"B": B, "T": T, "total_batch": B * T, "world": 1, "zero": 0,
             "outlier": {name: d.state() for name, d in detectors.items()}}
    train_gpt2.save_checkpoint(str(tmp_path), STEP, model, optimizer, loader, rng, extra)
    before = dict(rng_next=rng.random(16), batches=[loader.next_batch() for _ in range(3)],
                  m=optimizer.m.copy(), v=optimizer.v.copy())

    resumed = fresh_run(data)
    state = read_state(checkpoint_paths(str(tmp_path), STEP, rank=0)[1])
    train_gpt2.resume_checkpoint(state, *resumed)
    return before, resumed


def test_resumed_sampling_rng_continues_with_the_saved_runs_next_draws(saved):
    before, (_, _, _, rng, _) = saved
    np.testing.assert_array_equal(rng.random(16), before["rng_next"])


def test_resumed_loader_reads_the_batches_the_saved_run_would_have_read(saved):
    before, (_, _, loader, _, _) = saved
    for x_y, (x, y) in zip(before["batches"], (loader.next_batch() for _ in range(3))):
        np.testing.assert_array_equal(x, x_y[0])
        np.testing.assert_array_equal(y, x_y[1])


def test_resumed_adamw_has_the_saved_step_count_and_moments(saved):
    before, (_, optimizer, _, _, _) = saved
    assert optimizer.step == STEP
    np.testing.assert_array_equal(optimizer.m, before["m"])
    np.testing.assert_array_equal(optimizer.v, before["v"])



def test_a_resumed_run_names_every_schedule_flag_it_changed_with_the_checkpoints_value(capsys):
    then = train_gpt2.parse_args(["-k", "cosine", "-l", "1e-3", "-u", "10", "-q", "1.0", "-c", "0.0"])
    now = train_gpt2.parse_args(["-k", "wsd", "-l", "2e-3", "-u", "20", "-q", "0.1", "-c", "0.1"])
    comm = Comm(cpu)                    # one process: rank 0, which says the group's lines
    train_gpt2.say_schedule_changes(comm, {"schedule": train_gpt2.schedule(then, 100)},
                                    train_gpt2.schedule(now, 200), 50)
    assert capsys.readouterr().out == ("-y 1: resuming with -k wsd (was cosine), -l 0.002 (was 0.001), -u 20 "
                                       "(was 10), -q 0.1 (was 1.0), -c 0.1 (was 0.0), -x 200 (was 100): from "
                                       "step 50 on, the learning rate and weight decay follow this run's flags\n")
    train_gpt2.say_schedule_changes(comm, {"schedule": train_gpt2.schedule(now, 200)},
                                    train_gpt2.schedule(now, 200), 50)
    assert capsys.readouterr().out == ""
