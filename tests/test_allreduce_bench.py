"""dev/allreduce_bench.py under mpiexec on the CPU: rank 0 alone states the all-reduce's time and
bus bandwidth, and a single process is told to start several."""
import re
import subprocess
import sys

from tests.helpers import child_env
from tests.test_distributed import MPIEXEC, needs_mpi
from tests.test_train import ROOT

LINE = re.compile(r"^all-reduce of 4\.0 MB over 2 ranks \(cpu\): [\d.]+ ms, algorithm bandwidth [\d.]+ GB/s, "
                  r"bus bandwidth [\d.]+ GB/s = [\d.]+ Gb/s$")


def bench(*launcher):
    return subprocess.run([*launcher, sys.executable, "dev/allreduce_bench.py", "--device", "cpu", "--mb", "4",
                           "--reps", "3"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=child_env())


@needs_mpi
def test_two_ranks_print_one_line_with_the_bus_bandwidth():
    r = bench(MPIEXEC, "-n", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), r.stdout


def test_one_process_is_told_to_start_several():
    r = bench()
    assert r.returncode != 0 and "mpirun -np 2" in r.stderr
