"""Data parallel on the CPU: 2 MPI processes of B rows each train like 1 process of 2B rows,
and ZeRO-1 (sharded AdamW) like plain data parallel. fp32 throughout; the ranks' halves are
summed in another order than one big batch, so results agree to rounding (1e-5 of scale)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmpy import cpu
from llmpy.distributed import launcher
from llmpy.gpt2 import GPT2
from tests.helpers import assert_close
from tests.test_gpt2 import TINY, random_params

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = launcher()
STEPS, B, T = 4, 2, 16

needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")


def batch(step, rows):
    rng = np.random.default_rng(500 + step)
    tokens = rng.integers(0, TINY.vocab_size, size=(rows, T + 1)).astype(np.int32)
    return tokens[:, :-1], tokens[:, 1:]


def single_process(rows):
    model = GPT2(TINY, cpu, rows, T, params=random_params(TINY, seed=21))
    losses, norms = [], []
    for step in range(STEPS):
        model.zero_grad()
        model.forward(*batch(step, rows))
        model.backward()
        norms.append(model.update(1e-3, weight_decay=0.1, grad_clip=0.5))
        losses.append(model.mean_loss())
    return np.array(losses), np.array(norms), model.params_fp32()


def two_ranks(tmp_path, zero):
    out = tmp_path / f"zero{zero}.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "tests.dp_worker", str(out), str(zero)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    result = np.load(out)
    return result["losses"], result["norms"], result["params"]


@needs_mpi
def test_two_ranks_of_b_train_like_one_process_of_2b(tmp_path):
    losses, norms, params = two_ranks(tmp_path, zero=0)
    losses_ref, norms_ref, params_ref = single_process(2 * B)
    assert_close(losses, losses_ref, 1e-5, "losses")
    # clipping and Adam are blind to the gradient's scale: the norm shows a sum for a mean
    assert_close(norms, norms_ref, 1e-5, "gradient norms")
    assert_close(params, params_ref, 1e-5, "params")


@needs_mpi
def test_zero1_trains_like_plain_data_parallel(tmp_path):
    losses, norms, params = two_ranks(tmp_path, zero=1)
    losses_dp, norms_dp, params_dp = two_ranks(tmp_path, zero=0)
    assert_close(losses, losses_dp, 1e-5, "losses")
    assert_close(norms, norms_dp, 1e-5, "gradient norms")
    assert_close(params, params_dp, 1e-5, "params")


def test_one_process_comm_is_a_no_op():
    from llmpy.distributed import Comm
    comm = Comm(cpu)
    buf = np.arange(16, dtype=np.float32)
    comm.all_reduce_mean(buf)
    comm.reduce_scatter_mean(buf)
    comm.all_gather(buf)
    assert comm.world == 1 and comm.sum(2.5) == 2.5 and np.array_equal(buf, np.arange(16))


# --- the command line under mpiexec

def mpirun(n, *args, check=True):
    from tests.test_train import ROOT as root
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(root / "train_gpt2.py"),
                        "--device", "cpu", *map(str, args)], capture_output=True, text=True,
                       cwd=root, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def float_losses(stdout):
    from tests.test_train import losses
    return {step: float(loss) for step, loss in losses(stdout).items()}


@needs_mpi
@pytest.mark.parametrize("zero", [0, 1])
def test_two_processes_print_the_losses_of_one_with_twice_the_batch(tiny_run, zero):
    # in file order: shuffled, each process draws its own order (seed 42 + rank), as in llm.c
    one = float_losses(mpirun(1, *tiny_run, "-b", 4, "-x", 4, "-v", 2, "-m", 1, "--shuffle", 0).stdout)
    two = mpirun(2, *tiny_run, "-b", 2, "-x", 4, "-v", 2, "-m", 1, "-z", zero, "--shuffle", 0)
    assert "2 processes" in two.stdout
    assert two.stdout.count("step    1/4") == 1, "only rank 0 prints"
    for step, loss in float_losses(two.stdout).items():
        assert abs(loss - one[step]) < 2e-6, step


@needs_mpi
def test_two_process_zero1_run_resumes_bit_for_bit(tiny_run, tmp_path):
    flags = [*tiny_run, "-x", 6, "-v", 0, "-z", 1, "-o", tmp_path / "out", "-n", 3]
    full = float_losses(mpirun(2, *flags).stdout)
    assert (tmp_path / "out" / "state_00000003_00001.bin").exists(), "each rank saves its shard"
    (tmp_path / "out" / "DONE_00000006").unlink()
    resumed = mpirun(2, *flags, "-y", 1)
    assert float_losses(resumed.stdout) == {k: full[k] for k in (4, 5, 6)}


@needs_mpi
def test_resuming_with_another_number_of_processes_is_an_error(tiny_run, tmp_path):
    flags = [*tiny_run, "-x", 3, "-v", 0, "-z", 1, "-o", tmp_path / "out", "-n", 3]
    mpirun(2, *flags)
    r = mpirun(1, *flags, "-x", 6, "-y", 1, check=False)
    assert r.returncode != 0 and "as many" in r.stderr and "Traceback" not in r.stderr


def test_open_mpi_launcher_with_mpich_library_is_a_one_line_error(tiny_run):
    """Open MPI's mpirun marks its ranks with OMPI_COMM_WORLD_SIZE; mpi4py here loads MPICH (the
    mpich wheel), whose start-up would abort every rank: one line says which launcher to use."""
    r = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu",
                        *map(str, tiny_run), "-x", "1"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env={**os.environ, "OMPI_COMM_WORLD_SIZE": "2",
                                         "OMPI_COMM_WORLD_RANK": "0"})
    assert r.returncode == 1
    assert r.stderr.startswith("error: started by Open MPI's mpirun, but mpi4py loads MPICH's")
    assert f"{MPIEXEC} -n N" in r.stderr and len(r.stderr.strip().splitlines()) == 1
