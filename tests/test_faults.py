"""Faults on one process of a two-process job (mpiexec -n 2, on the CPU), each injected for
real: a bad shard or a missing state file in one rank's own folder (ranks run in folders of
their own, as nodes with their own copies of the data), a file in the way of one rank's
checkpoint write, a stalled step (LLMPY_FAULT), a signal. The job must end, every process of
it, within a bound, with its one line, and leave the last complete checkpoint resumable.
Each test prints its time to exit (pytest -s shows it)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmpy.shards import write_datafile
from llmpy.checkpoint import write_model
from tests.helpers import child_env
from tests.test_distributed import MPIEXEC, needs_mpi
from tests.test_gpt2 import TINY, random_params

ROOT = Path(__file__).resolve().parents[1]
EXIT_BOUND_S = 30           # start-up on a busy 2-core machine included; the faults end jobs in ~1 s
SHARD = 400                 # tokens: 6 steps of 2 ranks x B=2 x T=16 per shard


def write_data(folder, bad_shard=None, bad_position=None):
    """train_000.bin, train_001.bin in folder/data, in the tiny model's vocabulary except for
    one id at bad_position of shard bad_shard."""
    rng = np.random.default_rng(0)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for k in range(2):
        tokens = rng.integers(0, TINY.vocab_size, SHARD)
        if k == bad_shard:
            tokens[bad_position] = 1000
        write_datafile(folder / "data" / f"train_{k:03d}.bin", tokens)


@pytest.fixture
def job(tmp_path):
    """Two good rank folders, a tiny model and the flags of a 2-process run into tmp_path/out, in
    file order (--shuffle 0: the step at which a rank reaches a shard is the tests' to know)."""
    for rank in (0, 1):
        write_data(tmp_path / f"rank{rank}")
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    return ["-e", tmp_path / "tiny.bin", "-i", "data/train_*.bin", "-b", 2, "-t", 16, "-s", 0, "-v", 0,
            "-o", tmp_path / "out", "-n", 2, "--shuffle", 0]


def start(tmp_path, flags, env=None):
    """mpiexec of train_gpt2.py, rank r in tmp_path/rank<r>."""
    command = [MPIEXEC]
    for rank in (0, 1):
        command += [*([":"] if rank else []), "-n", "1", "-wdir", str(tmp_path / f"rank{rank}"),
                    sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", *map(str, flags)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(**(env or {})))


def descendants(pid):
    """The pids of every process below `pid` (Linux /proc; mpiexec's proxies start sessions
    of their own, so a process group would miss them)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end(process):
    """End the job and every process it started, by pid."""
    for pid in [*descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate()


def finish(process, what, bound=EXIT_BOUND_S):
    """Wait for the job; past the bound, end every process of it and fail."""
    t0 = time.monotonic()
    try:
        out, err = process.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        end(process)
        pytest.fail(f"{what}: the job did not end within {bound} s")
    seconds = time.monotonic() - t0
    print(f"\n{what}: exit status {process.returncode} after {seconds:.1f} s")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), seconds


def mpi_job(tmp_path, flags, what, env=None, bound=EXIT_BOUND_S):
    return finish(start(tmp_path, flags, env), what, bound)


def assert_job_failed_with(r, *words):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) >= 1, r.stderr
    for word in words:
        assert word in ours[0], r.stderr


def assert_resumes(tmp_path, flags, step):
    r, _ = mpi_job(tmp_path, [*flags, "-y", 1], "resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed from step {step} " in r.stdout


@needs_mpi
def test_a_bad_shard_on_one_rank_stops_every_rank_at_start_up(tmp_path, job):
    shard = tmp_path / "rank1" / "data" / "train_000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    r, seconds = mpi_job(tmp_path, [*job, "-x", 4], "bad shard on rank 1")
    assert_job_failed_with(r, "rank 1: data file data/train_000.bin", "truncated")
    assert len(r.stderr.strip().splitlines()) == 1, "agreed: one process speaks, nothing aborts"
    assert seconds < EXIT_BOUND_S


@needs_mpi
def test_a_bad_token_mid_run_on_one_rank_ends_the_job_and_the_last_checkpoint_resumes(tmp_path, job):
    write_data(tmp_path / "rank1", bad_shard=1, bad_position=123)
    r, seconds = mpi_job(tmp_path, [*job, "-x", 10], "bad token in rank 1's second shard")
    assert_job_failed_with(r, "rank 1: data file data/train_001.bin: token id 1000 at position 123")
    assert (tmp_path / "out" / "DONE_00000004").exists() and not (tmp_path / "out" / "DONE_00000006").exists()
    write_data(tmp_path / "rank1")
    assert_resumes(tmp_path, [*job, "-x", 10], 4)


def resume_without_rank_1s_state(tmp_path, job, steps):
    """A job of `steps` steps with a checkpoint every 2, then rank 1's state file of its last
    checkpoint deleted, then `-y 1` for two more steps: the resumed job's result."""
    r, _ = mpi_job(tmp_path, [*job, "-x", steps], f"{steps} steps")
    assert r.returncode == 0, r.stderr
    (tmp_path / "out" / f"state_{steps:08d}_00001.bin").unlink()
    r, _ = mpi_job(tmp_path, [*job, "-x", steps + 2, "-y", 1], f"resume without rank 1's state file of step {steps}")
    return r


@needs_mpi
def test_a_missing_state_file_on_one_rank_stops_every_rank_at_resume(tmp_path, job):
    r = resume_without_rank_1s_state(tmp_path, job, 2)
    assert_job_failed_with(r, "rank 1: ", "state_00000002_00001.bin", "No such file")
    assert len(r.stderr.strip().splitlines()) == 1


@needs_mpi
def test_a_missing_state_file_of_the_newest_checkpoint_on_one_rank_falls_back_on_every_rank(tmp_path, job):
    r = resume_without_rank_1s_state(tmp_path, job, 4)
    assert r.returncode == 0, r.stderr
    assert "-y 1: checkpoint 4: rank 1: " in r.stdout and "falling back to checkpoint 2" in r.stdout
    assert "resumed from step 2 " in r.stdout


@needs_mpi
def test_a_checkpoint_write_failing_on_one_rank_stops_every_rank_and_keeps_the_last_checkpoint(tmp_path, job):
    (tmp_path / "out").mkdir()
    blocker = tmp_path / "out" / "state_00000004_00001.bin.tmp"
    blocker.mkdir()                                   # a folder where rank 1's temp file goes
    r, seconds = mpi_job(tmp_path, [*job, "-x", 6], "checkpoint write failing on rank 1")
    assert_job_failed_with(r, "checkpoint 4 not written (the newest complete one is step 2): rank 1: ",
                           str(blocker))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "DONE_00000004" not in names and "model_00000004.bin" not in names, names
    assert "state_00000004_00000.bin" not in names, "the incomplete checkpoint is removed"
    blocker.rmdir()
    assert_resumes(tmp_path, [*job, "-x", 6], 2)


@needs_mpi
def test_a_stalled_rank_is_ended_by_the_watchdog_and_the_run_resumes(tmp_path, job):
    flags = [*job, "-x", 6, "--watchdog", 5]
    r, seconds = mpi_job(tmp_path, flags, "rank 1 stalled in step 3", env={"LLMPY_FAULT": "stall:step=3:rank=1"})
    assert_job_failed_with(r, "watchdog: step 3 made no progress for ", "while waiting for ", "(limit 5 s")
    assert seconds < 5 + EXIT_BOUND_S
    assert (tmp_path / "out" / "DONE_00000002").exists()
    assert_resumes(tmp_path, flags, 2)


def rank_pid(process, rank):
    """The pid of MPI rank `rank` of the job mpiexec `process` runs."""
    for pid in descendants(process.pid):
        try:
            if f"PMI_RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    return None


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes in /proc")
def test_sigterm_to_one_rank_ends_the_job_saying_where_to_resume(tmp_path, job):
    process = start(tmp_path, [*job, "-x", 6, "--watchdog", 0], env={"LLMPY_FAULT": "stall:step=3:rank=1"})
    try:
        deadline = time.monotonic() + EXIT_BOUND_S
        while not (tmp_path / "out" / "DONE_00000002").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)                                   # into step 3's stall
        pid = rank_pid(process, 1)
        assert pid is not None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        r, _ = finish(process, "SIGTERM to rank 1")
        print(f"SIGTERM to rank 1: the job ended {time.monotonic() - t0:.1f} s after the signal")
    finally:
        if process.poll() is None:
            end(process)
    assert_job_failed_with(r, "rank 1: stopped by SIGTERM during step 3", "resume from step 2 with -y 1")


@needs_mpi
def test_an_error_every_rank_finds_is_printed_once_without_a_rank(tmp_path, job):
    r, _ = mpi_job(tmp_path, [*job, "-x", 2, "-t", 32], "-t beyond the model on both ranks")
    assert_job_failed_with(r, "error: -t 32 is larger than the model's max sequence length 16")
    assert len(r.stderr.strip().splitlines()) == 1
