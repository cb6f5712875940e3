"""How a single-process run stops: the watchdog's limits, the phases it is told of, and a stalled step,
SIGINT and SIGTERM with one line saying where to resume, kill -9 in the middle of a checkpoint write,
a bad fault switch."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import train_gpt2
from llmpy import cpu
from llmpy.checkpoint import checkpoint_paths
from llmpy.distributed import Comm
from llmpy.watchdog import Watchdog
from tests.test_train import ROOT, assert_one_line_error, chooser_run, losses   # noqa: F401 -- a fixture


def test_auto_limit_is_20_median_steps_but_at_least_5_minutes_and_15_before_the_first_step():
    dog = Watchdog(timeout=0)                   # 0: no thread, the limits alone
    assert dog.limit(slow=False) == 900
    for seconds in (1.0, 30.0, 2.0):
        dog.step_time(seconds)
    assert dog.limit(slow=False) == 300         # 20 x 2 s is less than the floor
    for seconds in (40.0, 40.0):
        dog.step_time(seconds)
    assert dog.limit(slow=False) == 20 * 30.0 and dog.limit(slow=True) == 900


def test_a_set_timeout_is_the_step_limit_and_slow_phases_keep_15_minutes():
    dog = Watchdog(timeout=0)
    dog.timeout = 5
    dog.step_time(0.1)
    assert dog.limit(slow=False) == 5 and dog.limit(slow=True) == 900


def start(tiny_run, tmp_path, *flags, fault):
    env = {**os.environ, "LLMPY_FAULT": fault}
    return subprocess.Popen([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", *map(str, tiny_run),
                             *map(str, ["-v", 0, "-o", tmp_path / "out", "-n", 1, *flags])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def wait(process, bound, what):
    t0 = time.monotonic()
    try:
        out, err = process.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"{what}: not ended within {bound} s")
    print(f"\n{what}: exit status {process.returncode} after {time.monotonic() - t0:.1f} s")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


class PhaseLog(Watchdog):
    """The watchdog without its thread (timeout 0), keeping every phase it is told of."""
    def __init__(self):
        super().__init__(timeout=0)
        self.phases = []

    def beat(self, step, what, slow=False):
        super().beat(step, what, slow)
        if not self.phases or self.phases[-1] != (step, what, slow):     # a phase per batch: once
            self.phases.append((step, what, slow))


def test_the_watchdog_is_told_each_phase_with_its_step_and_whether_it_is_slow(chooser_run, tmp_path, capsys):
    # 2 steps of 2 micro-steps; the val loss at steps 0 and 2, HellaSwag, a sample and a checkpoint at step 2
    flags = [*chooser_run, "-x", 2, "-d", 2 * 4 * 32, "-v", 2, "-m", 2, "-h", 1, "-s", 2, "-g", 2, "-n", 2,
             "-o", tmp_path / "out"]
    watchdog = PhaseLog()
    train_gpt2.train(train_gpt2.parse_args(["--device", "cpu", *map(str, flags)]), cpu, Comm(cpu), watchdog)
    step_phases = ["micro-step 1/2's forward and backward", "micro-step 2/2's forward and backward",
                   "the loss all-reduce (every process)", "the gradient all-reduce (every process)",
                   "the gradient norm and the update"]
    assert watchdog.phases == [
        (0, "the val loss", True),
        *[(1, what, False) for what in step_phases],
        *[(2, what, False) for what in step_phases],
        (2, "the val loss", True), (2, "HellaSwag", True), (2, "the HellaSwag counts' all-reduce", True),
        (2, "sampling", True), (2, "the checkpoint write", True)]


def test_the_watchdog_learns_each_steps_time_for_its_automatic_limit(tiny_run, capsys):
    watchdog = PhaseLog()
    train_gpt2.train(train_gpt2.parse_args(["--device", "cpu", *map(str, [*tiny_run, "-x", 3, "-v", 0])]),
                     cpu, Comm(cpu), watchdog)
    printed = [float(ms) for ms in re.findall(r"\| ([0-9.]+) ms \|", capsys.readouterr().out)]
    assert len(printed) == 3
    assert [round(seconds * 1000, 2) for seconds in watchdog.durations] == printed


def test_a_stalled_step_ends_the_run_with_one_line_naming_it(tiny_run, tmp_path):
    process = start(tiny_run, tmp_path, "-x", 4, "--watchdog", 2, fault="stall:step=3:rank=0")
    r = wait(process, 60, "stalled in step 3, --watchdog 2")
    assert_one_line_error(r, "watchdog: step 3 made no progress for ", "micro-step 1/1's forward and backward",
                          "(limit 2 s, --watchdog)")


# a communicator whose NCCL reports an asynchronous error a second into step 7's all-reduce (what
# ncclCommGetAsyncError returns when a peer's connection is lost), under a 10-minute --watchdog
NCCL_FAULT = """
import time
from llmpy.watchdog import Watchdog

class Communicator:
    def collective_fault(self):
        return "remote process exited or there was a network error" if time.monotonic() > at else None

    def abort_collectives(self):
        print("communicator aborted", flush=True)

at = time.monotonic() + 1
dog = Watchdog(timeout=600)
dog.guard(Communicator())
dog.beat(7, "the gradient all-reduce")
time.sleep(120)
"""


def test_an_error_nccl_reports_ends_the_job_at_once_after_aborting_the_communicator():
    process = subprocess.Popen([sys.executable, "-c", NCCL_FAULT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    r = wait(process, 60, "an NCCL error in step 7 under --watchdog 600")
    assert r.returncode == 1 and r.stdout == "communicator aborted\n"
    assert_one_line_error(r, 'watchdog: step 7: NCCL reports "remote process exited or there was a network error" '
                             "while waiting for the gradient all-reduce; ending the job")


def test_the_default_watchdog_lets_a_slow_step_finish(tiny_run, tmp_path):
    # -1, the automatic limit: 15 minutes until a step time is known, then 20 median steps, at least 5
    process = start(tiny_run, tmp_path, "-x", 3, fault="stall:step=2:rank=0:seconds=2")
    r = wait(process, 60, "a 2-second step 2 under the default --watchdog")
    assert r.returncode == 0, r.stderr
    assert "step    3/3 |" in r.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_one_line_saying_where_to_resume(tiny_run, tmp_path, signum):
    process = start(tiny_run, tmp_path, "-x", 4, "--watchdog", 0, fault="stall:step=3:rank=0")
    deadline = time.monotonic() + 60
    while not (tmp_path / "out" / "DONE_00000002").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    process.send_signal(signum)
    r = wait(process, 60, f"{signal.Signals(signum).name} in step 3")
    assert_one_line_error(r, f"stopped by {signal.Signals(signum).name} during step 3",
                          f"resume from step 2 with -y 1 -o {tmp_path / 'out'}")


def test_kill_9_in_the_middle_of_a_checkpoint_write_resumes_like_a_run_that_never_stopped(tiny_run, tmp_path):
    out = tmp_path / "out"
    process = start(tiny_run, tmp_path, "-x", 6, "-n", 2, "--watchdog", 0, fault="stall:step=4:rank=0:at=checkpoint")
    deadline = time.monotonic() + 60
    while not (out / "model_00000004.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)                 # stalled after the model file: a second later, still no state file
    assert not os.path.exists(checkpoint_paths(str(out), 4, rank=0)[1])
    process.kill()                                       # SIGKILL: no handler, no clean-up
    wait(process, 60, "SIGKILL in checkpoint 4's write")
    assert (out / "DONE_00000002").exists() and not (out / "DONE_00000004").exists()
    flags = [*map(str, tiny_run), "-v", "0", "-o", str(out), "-n", "2", "-x", "6"]
    resumed = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", *flags, "-y", "1"],
                             capture_output=True, text=True, cwd=ROOT)
    assert "resumed from step 2 " in resumed.stdout, resumed.stderr
    whole = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu",
                            *[str(tmp_path / "whole") if f == str(out) else f for f in flags]],
                           capture_output=True, text=True, cwd=ROOT)
    assert losses(resumed.stdout) == {k: v for k, v in losses(whole.stdout).items() if k > 2}


def test_a_bad_fault_switch_is_a_one_line_error(tiny_run, tmp_path):
    r = wait(start(tiny_run, tmp_path, "-x", 1, fault="stall:step=x"), 60, "a bad LLMPY_FAULT")
    assert_one_line_error(r, "LLMPY_FAULT=stall:step=x")


def test_the_resume_hint_names_the_newest_complete_checkpoint_or_says_there_is_none(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_00000008.bin").write_bytes(b"")       # no DONE marker: incomplete
    assert train_gpt2.resume_hint(str(out)) == "no complete checkpoint to resume from"
    for step in (2, 4, 6):
        (out / f"DONE_{step:08d}").write_bytes(b"")
    assert train_gpt2.resume_hint(str(out)) == f"resume from step 6 with -y 1 -o {out}"
    monkeypatch.chdir(out)                              # without -o, the working folder's checkpoints are not its
    assert train_gpt2.resume_hint(None) == "no complete checkpoint to resume from (no -o)"
