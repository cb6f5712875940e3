"""What train_gpt2.py's checkpoint hands to a resumed run, checked directly (in-process) rather
than through the printed output of a resumed run (tests/test_train.py does that): a run saved
by save_checkpoint and taken up by resume_checkpoint in a fresh process's objects continues
with the sampling RNG's next draws, the data loader's next batches, AdamW's step count and
moments and the outlier detectors' windows of the run that wrote it; a GPU run's master weights
go where this run keeps its weights; a checkpoint this run cannot continue (another data order,
a shuffled one's B, another AdamW size, sharded master weights) is one line naming what to change."""
import numpy as np
import pytest

import train_gpt2
from llmpy.shards import write_datafile
from llmpy import LlmpyError, cpu
from llmpy.checkpoint import checkpoint_paths, read_state
from llmpy.dataloader import DataLoader
from llmpy.distributed import Comm
from llmpy.gpt2 import GPT2
from llmpy.optim import AdamW
from llmpy.outlier import OutlierDetector
from tests.test_gpt2 import TINY, random_params

B, T, STEP = 2, 16, 3


def fresh_run(data, shuffle=False):
    """The objects a run builds before it resumes: model, optimizer, loader, RNG seeded as at
    start, outlier detectors."""
    params = random_params(TINY, seed=30)
    model = GPT2(TINY, cpu, B, T, params=params)
    return (model, AdamW(model, params), DataLoader(data, B, T, shuffle=shuffle, vocab_size=TINY.vocab_size),
            np.random.default_rng(42), {"loss": OutlierDetector(), "grad": OutlierDetector()})


def save_run(tmp_path, shuffle=False):
    """A run that trained 3 steps, scored their losses and norms, drew from its RNG and read 3
    batches, then checkpointed; returns the train data, the run's objects and its checkpoint's state."""
    data = str(tmp_path / "train.bin")
    write_datafile(data, np.random.default_rng(31).integers(0, TINY.vocab_size, 40 * B * T))
    run = model, optimizer, loader, rng, detectors = fresh_run(data, shuffle)
    for step in range(STEP):
        model.zero_grad()
        model.forward(*loader.next_batch())
        model.backward()
        detectors["loss"].update(model.mean_loss())
        detectors["grad"].update(optimizer.grad_norm())
        optimizer.update(1e-3)
        rng.random(5 + step)         # sampling draws a varying number of values
    extra = {"B": B, "T": T, "total_batch": B * T, "world": 1, "zero": 0, "shuffle": int(shuffle),
             "outlier": {name: d.state() for name, d in detectors.items()}}
    train_gpt2.save_checkpoint(str(tmp_path), STEP, model, optimizer, loader, rng, extra)
    return data, run, read_state(checkpoint_paths(str(tmp_path), STEP, rank=0)[1])


@pytest.fixture
def saved(tmp_path):
    """What the saved run would do next, and a fresh run resumed from its checkpoint."""
    data, (_, optimizer, loader, rng, detectors), state = save_run(tmp_path)
    before = dict(rng_next=rng.random(16), batches=[loader.next_batch() for _ in range(3)],
                  m=optimizer.m.copy(), v=optimizer.v.copy(),
                  outlier={name: d.state() for name, d in detectors.items()})
    resumed = fresh_run(data)
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


def test_resumed_outlier_detectors_have_the_saved_windows(saved):
    before, (_, _, _, _, detectors) = saved
    assert before["outlier"]["loss"]["count"] == STEP
    assert {name: d.state() for name, d in detectors.items()} == before["outlier"]


def test_a_checkpoint_without_outlier_state_resumes_with_empty_detectors(tmp_path):
    data, _, state = save_run(tmp_path)
    del state["extra"]["outlier"]                # written before -sl and -sg kept their windows
    resumed = fresh_run(data)
    train_gpt2.resume_checkpoint(state, *resumed)
    assert [d.state() for d in resumed[4].values()] == [OutlierDetector().state()] * 2


def test_a_shuffled_run_resumes_shuffled_reading_the_batches_it_would_have_read(tmp_path):
    data, (_, _, loader, _, _), state = save_run(tmp_path, shuffle=True)
    resumed = fresh_run(data, shuffle=True)
    train_gpt2.resume_checkpoint(state, *resumed)
    for _ in range(3):
        np.testing.assert_array_equal(resumed[2].next_batch()[0], loader.next_batch()[0])


@pytest.mark.parametrize("saved_shuffled, error", [
    (True, "-y 1: the checkpoint read the train data shuffled; resume it with --shuffle 1 (this run: file order)"),
    (False, "-y 1: the checkpoint read the train data in file order; resume it with --shuffle 0 (or -a 1) "
            "(this run: shuffled)")])
def test_resuming_in_another_data_order_is_an_error_naming_the_flag(tmp_path, saved_shuffled, error):
    data, _, state = save_run(tmp_path, shuffle=saved_shuffled)
    with pytest.raises(LlmpyError) as refused:
        train_gpt2.resume_checkpoint(state, *fresh_run(data, shuffle=not saved_shuffled))
    assert str(refused.value) == error


def test_resuming_a_shuffled_run_with_another_b_is_an_error_naming_the_flag(tmp_path):
    data, _, state = save_run(tmp_path, shuffle=True)
    state["extra"]["B"] = 4
    with pytest.raises(LlmpyError) as refused:
        train_gpt2.resume_checkpoint(state, *fresh_run(data, shuffle=True))
    assert str(refused.value) == ("-y 1: the checkpoint's shuffled order is of samples of B=4 rows; "
                                  "resume it with -b 4 (this run: B=2)")


def test_resuming_in_file_order_with_another_b_says_so_and_resumes(tmp_path, capsys):
    data, _, state = save_run(tmp_path)
    capsys.readouterr()
    state["extra"]["B"] = 4
    resumed = fresh_run(data)
    train_gpt2.resume_checkpoint(state, *resumed)
    assert capsys.readouterr().out == ("resuming with B=2 where the checkpoint had B=4: the same data, losses "
                                       "equal within float rounding\n")
    assert resumed[1].step == STEP


def test_resuming_with_the_checkpoints_b_says_nothing_of_it(tmp_path, capsys):
    data, _, state = save_run(tmp_path)
    capsys.readouterr()
    train_gpt2.resume_checkpoint(state, *fresh_run(data))
    assert capsys.readouterr().out == ""


def test_resuming_adamw_state_of_another_size_is_an_error_giving_both(tmp_path):
    data, (model, _, _, _, _), state = save_run(tmp_path)
    state["m"] = state["m"][:-1]
    n = model.params_flat.size
    with pytest.raises(LlmpyError) as refused:
        train_gpt2.resume_checkpoint(state, *fresh_run(data))
    assert str(refused.value) == (f"-y 1: the checkpoint's AdamW state has {n - 1:,} values, this run's {n:,} "
                                  "(another model, or another number of processes with ZeRO-1)")


def master_weights(model):
    """fp32 master weights, as a GPU run's checkpoint has them: not the model's own weights."""
    return np.random.default_rng(32).standard_normal(model.params_flat.size).astype(np.float32)


def test_a_gpu_runs_checkpoint_resumes_on_the_cpu_from_its_fp32_master_weights(tmp_path):
    data, (model, _, _, _, _), state = save_run(tmp_path)
    state["master"] = master_weights(model)
    resumed = fresh_run(data)
    train_gpt2.resume_checkpoint(state, *resumed)
    np.testing.assert_array_equal(resumed[0].params_flat, state["master"])


def test_a_zero_1_gpu_runs_sharded_master_weights_on_the_cpu_are_an_error(tmp_path):
    data, (model, _, _, _, _), state = save_run(tmp_path)
    state["master"] = master_weights(model)[:model.params_flat.size // 2]
    with pytest.raises(LlmpyError) as refused:
        train_gpt2.resume_checkpoint(state, *fresh_run(data))
    assert str(refused.value) == ("-y 1: the checkpoint's master weights are sharded (ZeRO-1); "
                                  "resume it with as many processes")


@pytest.mark.parametrize("saved_master", [True, False])
def test_an_optimizer_with_master_weights_resumes_the_checkpoints_or_keeps_its_own(tmp_path, saved_master):
    # an optimizer that keeps master weights (a GPU's bf16 run) takes the checkpoint's; a checkpoint
    # without them (a CPU run's) leaves it its copy of the weights it was built from
    data, (model, _, _, _, _), state = save_run(tmp_path)
    state["master"] = master_weights(model) if saved_master else None
    resumed = fresh_run(data)
    resumed[1].master = resumed[0].params_flat.copy()
    own = resumed[1].master.copy()
    weights = resumed[0].params_flat.copy()
    train_gpt2.resume_checkpoint(state, *resumed)
    np.testing.assert_array_equal(resumed[1].master, state["master"] if saved_master else own)
    np.testing.assert_array_equal(resumed[0].params_flat, weights)



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


def test_a_checkpoint_from_before_the_schedule_was_kept_resumes_saying_nothing_of_it(capsys):
    now = train_gpt2.parse_args(["-k", "wsd", "-l", "2e-3"])
    train_gpt2.say_schedule_changes(Comm(cpu), {"T": 16}, train_gpt2.schedule(now, 200), 50)
    assert capsys.readouterr().out == ""


def resume_batch_error(extra, flags, world):
    """check_resumed_batch's one line for a checkpoint's extra state, or None where it resumes."""
    try:
        train_gpt2.check_resumed_batch(extra, train_gpt2.parse_args(["-t", "16", *flags]), 64, world)
    except LlmpyError as e:
        return str(e)
    return None


def test_resuming_with_another_number_of_processes_or_z_is_an_error_giving_both():
    assert resume_batch_error({"world": 2, "zero": 1, "T": 16, "total_batch": 64}, ["-z", "0"], 1) == (
        "-y 1: the checkpoint was written by 2 process(es) with -z 1; resume it with as many and the same -z "
        "(this run: 1, -z 0)")
    assert resume_batch_error({"world": 2, "zero": 0, "T": 16, "total_batch": 64}, ["-z", "0"], 1) is not None
    assert resume_batch_error({"world": 1, "zero": 1, "T": 16, "total_batch": 64}, ["-z", "0"], 1) is not None
    assert resume_batch_error({"world": 2, "zero": 1, "T": 16, "total_batch": 64}, ["-z", "1"], 2) is None


def test_a_checkpoint_from_before_processes_z_and_the_total_batch_were_kept_is_one_process_without_zero():
    assert resume_batch_error({"T": 16}, ["-z", "0"], 1) is None
    assert resume_batch_error({"T": 16}, ["-z", "1"], 2) == (
        "-y 1: the checkpoint was written by 1 process(es) with -z 0; resume it with as many and the same -z "
        "(this run: 2, -z 1)")
