"""Data parallel on the CPU: 2 MPI processes of B rows each train like 1 process of 2B rows,
and ZeRO-1 (sharded AdamW) like plain data parallel. fp32 throughout; the ranks' halves are
summed in another order than one big batch, so results agree to rounding (1e-5 of scale)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmpy import cpu
from llmpy.gpt2 import GPT2
from tests.helpers import assert_close
from tests.test_gpt2 import TINY, random_params

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
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
