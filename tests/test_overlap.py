"""The gradient reduction in buckets started during the backward (--overlap 1) against one call
after it (--overlap 0), as a user runs them: train_gpt2.py under `mpiexec -n 2` on the CPU.
With two ranks each element's mean is (a + b) / 2 whatever the call that carries it, so the
runs must agree bit for bit: the printed losses and norms, the model file and every rank's
optimizer state. Also a launch from a hostfile, and the flags' bad values."""
import filecmp
import subprocess
import sys

import pytest

from tests.helpers import child_env
from tests.test_distributed import MPIEXEC, mpirun, needs_mpi
from tests.test_train import ROOT, STEP_LINE, assert_one_line_error, run

# 2 micro-steps a step (-d 128 = 2 x B*T*2 processes); buckets of one layer of the tiny model
ACCUMULATE = ["-x", 3, "-v", 0, "-d", 128]
SMALL_BUCKETS = ["--overlap", 1, "--bucket_mb", 0.05]


def step_lines(stdout):
    """step, loss and norm of every step line: all but the timings."""
    return [m.group(1, 3, 4) for m in map(STEP_LINE.match, stdout.splitlines()) if m]


def checkpoint_files(out):
    return sorted(p.name for p in out.iterdir() if p.suffix == ".bin")


@needs_mpi
@pytest.mark.parametrize("zero", [0, 1])
def test_buckets_during_the_backward_give_the_bits_of_one_call_after_it(tiny_run, tmp_path, zero):
    runs = {}
    for name, flags in (("one_call", ["--overlap", 0]), ("buckets", SMALL_BUCKETS)):
        out = tmp_path / name
        r = mpirun(2, *tiny_run, *ACCUMULATE, "-z", zero, *flags, "-o", out, "-n", 3)
        runs[name] = (r.stdout, out)
    (one, one_out), (bucketed, bucketed_out) = runs["one_call"], runs["buckets"]
    assert "gradient reduction: one call after the backward" in one.splitlines()
    assert "gradient reduction: 3 buckets of up to 0.05 MiB, started during the backward" in bucketed.splitlines()
    assert len(step_lines(one)) == 3 and step_lines(bucketed) == step_lines(one)
    files = checkpoint_files(one_out)
    assert files == ["model_00000003.bin", "state_00000003_00000.bin", "state_00000003_00001.bin"]
    _, mismatch, errors = filecmp.cmpfiles(one_out, bucketed_out, files, shallow=False)
    assert mismatch == errors == [], "weights or optimizer state differ"


@needs_mpi
def test_one_bucket_holding_everything_gives_the_bits_of_one_call(tiny_run):
    one = mpirun(2, *tiny_run, *ACCUMULATE, "--overlap", 0).stdout
    whole = mpirun(2, *tiny_run, *ACCUMULATE, "--bucket_mb", 1000).stdout
    assert "1 bucket of up to 1000 MiB" in whole
    assert step_lines(whole) == step_lines(one)


@needs_mpi
def test_the_reduction_line_counts_two_buckets_in_the_plural(tiny_run):
    # the tiny model's 0.11 MiB of gradients in buckets of up to 0.1 MiB
    r = mpirun(2, *tiny_run, "-x", 1, "-v", 0, "--bucket_mb", 0.1)
    assert "gradient reduction: 2 buckets of up to 0.1 MiB, started during the backward" in r.stdout


@needs_mpi
def test_overlap_is_on_by_default_with_several_processes(tiny_run):
    r = mpirun(2, *tiny_run, "-x", 1, "-v", 0)
    assert "1 bucket of up to 25 MiB, started during the backward" in r.stdout


def test_a_single_process_says_nothing_of_the_reduction(tiny_run):
    assert "gradient reduction" not in run(*tiny_run, "-x", 1, "-v", 0).stdout


@needs_mpi
def test_a_hostfile_naming_localhost_twice_launches_the_two_processes(tiny_run, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:1\nlocalhost:1\n")
    env = child_env()
    args = [*tiny_run, *ACCUMULATE, "-z", 1]
    r = subprocess.run([MPIEXEC, "-f", str(hosts), "-n", "2", sys.executable, str(ROOT / "train_gpt2.py"),
                        "--device", "cpu", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 processes, ZeRO-1" in r.stdout
    assert step_lines(r.stdout) == step_lines(mpirun(2, *args).stdout)


@pytest.mark.parametrize("value", [0, -1, "nan"])
def test_a_bucket_size_that_is_not_positive_is_a_one_line_error(tiny_run, value):
    assert_one_line_error(run(*tiny_run, "--bucket_mb", value, check=False), f"--bucket_mb {float(value)}")


def test_overlap_takes_only_0_or_1(tiny_run):
    assert_one_line_error(run(*tiny_run, "--overlap", 2, check=False), "--overlap", "2")
