"""How a step ends, in-process: the update or its skip (a non-finite loss or norm, -sl, -sg),
--max_skips, and the step line with main.log's, on a clock the test sets. The run's own pieces
are stand-ins that record what they are given; main.log is the real Logger's."""
import math
from types import SimpleNamespace

import pytest

import train_gpt2
from llmpy import JobError, cpu
from llmpy.config import from_descriptor
from llmpy.logger import Logger
from llmpy.watchdog import Watchdog
from tests.test_mfu import GPU


class Speaker:
    """A process's comm, keeping what it says (every rank's, not only rank 0's)."""
    def __init__(self, rank=0, world=1):
        self.rank, self.world, self.said = rank, world, []

    def say(self, *args, **kwargs):
        self.said.append((" ".join(map(str, args)), kwargs))


class Scores:
    """Outlier detectors that score each value as the test says (llmpy/outlier.py has its own tests)."""
    def __init__(self, z):
        self.z, self.values = z, []

    def update(self, value):
        self.values.append(value)
        return self.z


class Optimizer:
    """Keeps each update: AdamW's step counter then, the learning rate and the norm it was given."""
    def __init__(self):
        self.step, self.updates = None, []

    def update(self, lr, norm=None):
        self.updates.append((self.step, lr, norm))


def trainer(tmp_path, zloss=math.nan, zgrad=math.nan, rank=0, **flags):
    args = SimpleNamespace(**{"skip_lossz": 0.0, "skip_gradz": 0.0, "max_skips": 0, "out_dir": str(tmp_path),
                              **flags})
    return SimpleNamespace(args=args, comm=Speaker(rank), logger=Logger(tmp_path), optimizer=Optimizer(),
                           detectors={"loss": Scores(zloss), "grad": Scores(zgrad)}, skipped_in_a_row=0)


def log(tmp_path):
    return (tmp_path / "main.log").read_text().splitlines()


# --------------------------------------------------------------------------------------------
# the update or its skip

def test_a_finite_step_within_the_thresholds_updates_as_adamw_step_step_plus_1_and_ends_a_skip_streak(tmp_path):
    t = trainer(tmp_path, zloss=2.5, zgrad=2.5, skip_lossz=3.0, skip_gradz=3.0, max_skips=2)
    t.skipped_in_a_row = 1
    train_gpt2.update_or_skip(t, 7, 2.75, 1.5, 3e-4)
    assert t.optimizer.updates == [(7, 3e-4, 1.5)]      # the step's norm, not taken again
    assert t.skipped_in_a_row == 0
    assert t.detectors["loss"].values == [2.75] and t.detectors["grad"].values == [1.5]
    assert t.comm.said == [] and log(tmp_path) == []


@pytest.mark.parametrize("loss, norm, what", [(math.nan, 1.5, "loss"), (2.75, math.inf, "grad"),
                                              (math.inf, math.nan, "loss")])
def test_a_non_finite_loss_or_norm_skips_the_update_and_logs_which(tmp_path, loss, norm, what):
    t = trainer(tmp_path)
    t.skipped_in_a_row = 1
    train_gpt2.update_or_skip(t, 7, loss, norm, 3e-4)
    assert t.optimizer.updates == []
    assert t.skipped_in_a_row == 2
    assert t.comm.said == [(f"skipping update: loss {loss} grad norm {norm}", {})]
    assert log(tmp_path) == [f"s:8 skip_{what}z:nan"]


@pytest.mark.parametrize("which, flag", [("loss", "skip_lossz"), ("grad", "skip_gradz")])
def test_a_z_score_above_its_threshold_skips_the_update_and_logs_it(tmp_path, which, flag):
    t = trainer(tmp_path, **{f"z{which}": 3.5, flag: 3.0})
    train_gpt2.update_or_skip(t, 7, 2.75, 1.5, 3e-4)
    assert t.optimizer.updates == [] and t.skipped_in_a_row == 1
    assert t.comm.said == [(f"skipping update due to {which} z-score of 3.500000", {})]
    assert log(tmp_path) == [f"s:8 skip_{which}z:3.5000"]


@pytest.mark.parametrize("which, flag", [("loss", "skip_lossz"), ("grad", "skip_gradz")])
@pytest.mark.parametrize("z, threshold", [(3.0, 3.0),          # at the threshold, not above it
                                          (math.nan, 3.0),     # the window still filling: no verdict
                                          (100.0, 0.0)])       # no threshold set
def test_a_z_score_not_above_a_set_threshold_takes_the_update(tmp_path, which, flag, z, threshold):
    t = trainer(tmp_path, **{f"z{which}": z, flag: threshold})
    train_gpt2.update_or_skip(t, 7, 2.75, 1.5, 3e-4)
    assert t.optimizer.updates == [(7, 3e-4, 1.5)]
    assert t.comm.said == [] and log(tmp_path) == []


@pytest.mark.parametrize("rank", [0, 1])
def test_max_skips_in_a_row_stop_every_process_with_one_line_spoken_by_rank_0(tmp_path, rank):
    t = trainer(tmp_path, rank=rank, max_skips=3)
    for step in (4, 5):
        train_gpt2.update_or_skip(t, step, math.nan, 1.5, 3e-4)
    with pytest.raises(JobError) as stop:
        train_gpt2.update_or_skip(t, 6, math.nan, 1.5, 3e-4)
    assert str(stop.value) == ("step 7: 3 updates in a row were skipped (loss nan, grad norm 1.5); stopping "
                               "(--max_skips 3); no complete checkpoint to resume from")
    assert stop.value.speaker == (rank == 0)


def test_an_update_between_skips_starts_the_count_again(tmp_path):
    t = trainer(tmp_path, max_skips=2)
    train_gpt2.update_or_skip(t, 4, math.nan, 1.5, 3e-4)
    train_gpt2.update_or_skip(t, 5, 2.75, 1.5, 3e-4)
    train_gpt2.update_or_skip(t, 6, math.nan, 1.5, 3e-4)
    with pytest.raises(JobError, match="^step 8: 2 updates in a row"):
        train_gpt2.update_or_skip(t, 7, math.nan, 1.5, 3e-4)


# --------------------------------------------------------------------------------------------
# the step line and main.log's

class Clock:
    """time.perf_counter as the test sets it."""
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class Device(GPU):
    """A GPU that reports 3 GiB in use."""
    def memory_in_use(self):
        return 3 * 2**30


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(train_gpt2, "time", clock)
    return clock


def stepper(tmp_path, ops, start=0, num_steps=10, total_batch=4096, world=1):
    return SimpleNamespace(comm=Speaker(world=world), logger=Logger(tmp_path), watchdog=Watchdog(timeout=0),
                           ops=ops, model=SimpleNamespace(cfg=from_descriptor("d12"), T=1024),
                           total_batch=total_batch, start=start, num_steps=num_steps, t_first=None)


def report(t, clock, step, ends_after):
    """Step `step`, started now, ends `ends_after` seconds later."""
    t0 = clock.now
    clock.now += ends_after
    train_gpt2.report_step(t, step, 2.5, 1.25, 3e-4, t0)


def test_the_step_line_is_llm_c_s_with_the_step_time_tokens_per_second_and_eta(tmp_path, clock):
    t = stepper(tmp_path, cpu)
    clock.now = 100.0
    report(t, clock, 0, 2.0)
    assert t.comm.said == [("step    1/10 | loss 2.500000 | norm 1.2500 | lr 3.00e-04 | 2000.00 ms | "
                            "2048 tok/s | eta 18s", {"flush": True})]        # 9 steps left at 2 s
    assert log(tmp_path) == ["s:1 trl:2.500000 lr:3.000000e-04 norm:1.2500 dt:2000.00 tps:2048"]
    assert list(t.watchdog.durations) == [2.0]


def test_the_eta_is_the_steps_left_times_the_mean_step_since_the_first_ended(tmp_path, clock):
    t = stepper(tmp_path, cpu)
    for step, seconds in enumerate([2.0, 1.0, 3.0]):
        report(t, clock, step, seconds)
    # after step 2: 8 steps left at 1 s (the first step's 2 s, with its start-up, left out);
    # after step 3: 7 left at (1 + 3) / 2 = 2 s
    assert [said.rsplit("| ", 1)[1] for said, _ in t.comm.said] == ["eta 18s", "eta 8s", "eta 14s"]
    assert [line.split(" dt:")[1] for line in log(tmp_path)] == ["2000.00 tps:2048", "1000.00 tps:4096",
                                                                 "3000.00 tps:1365"]


def test_a_resumed_runs_eta_counts_the_steps_it_has_done_itself(tmp_path, clock):
    t = stepper(tmp_path, cpu, start=5, num_steps=20)
    report(t, clock, 5, 4.0)
    report(t, clock, 6, 2.0)
    assert t.comm.said[1][0].startswith("step    7/20 |") and t.comm.said[1][0].endswith("| eta 26s")  # 13 x 2 s


def test_on_a_gpu_the_line_has_llm_c_s_mfu_per_gpu_and_the_first_step_says_the_memory_in_use(tmp_path, clock):
    # 2 GPUs, 1048576 tokens a step in 0.75 s: each did 524288, 56.8% of an H200 (tests/test_mfu.py)
    t = stepper(tmp_path, Device("NVIDIA H200"), total_batch=1048576, world=2)
    report(t, clock, 0, 0.75)
    report(t, clock, 1, 0.75)
    assert [said for said, _ in t.comm.said] == [
        "step    1/10 | loss 2.500000 | norm 1.2500 | lr 3.00e-04 | 750.00 ms | 56.8% bf16 MFU | 1398101 tok/s | eta 7s",
        "GPU memory in use after the first step: 3,072 MiB",
        "step    2/10 | loss 2.500000 | norm 1.2500 | lr 3.00e-04 | 750.00 ms | 56.8% bf16 MFU | 1398101 tok/s | eta 6s"]
