"""Data parallel on the CPU: 2 MPI processes of B rows each train like 1 process of 2B rows,
and ZeRO-1 (sharded AdamW) like plain data parallel; ZeRO-1's sharded norm and update also run
as two threads of this process (no MPI launcher needed) against torch's AdamW on the whole
batch. fp32 throughout; the ranks' halves are summed in another order than one big batch, so
results agree to rounding (1e-5 of scale).

The MPI tests skip themselves where no mpiexec is found, except where LLMPY_REQUIRE_MPI=1
(.ci/run sets it): there a missing launcher fails them."""
import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llmpy import cpu
from llmpy.config import num_parameters
from llmpy.distributed import Comm, launcher
from llmpy.gpt2 import GPT2
from llmpy.optim import AdamW, pieces
from llmpy.testing.compare import assert_close
from llmpy.testing.torch_gpt2 import TorchGPT2
from tests.helpers import child_env
from tests.test_gpt2 import TINY, random_params

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = launcher()
STEPS, B, T = 4, 2, 16

REQUIRE_MPI = os.environ.get("LLMPY_REQUIRE_MPI") == "1"
needs_mpi = pytest.mark.skipif(MPIEXEC is None and not REQUIRE_MPI, reason="no mpiexec (pip install mpich)")


def mpiexec():
    assert MPIEXEC is not None, "no mpiexec on PATH or beside this Python: make install provides it (the mpich wheel)"
    return MPIEXEC


def batch(step, rows):
    rng = np.random.default_rng(500 + step)
    tokens = rng.integers(0, TINY.vocab_size, size=(rows, T + 1)).astype(np.int32)
    return tokens[:, :-1], tokens[:, 1:]


def single_process(rows):
    params = random_params(TINY, seed=21)
    model = GPT2(TINY, cpu, rows, T, params=params)
    optimizer = AdamW(model, params, weight_decay=0.1, grad_clip=0.5)
    losses, norms = [], []
    for step in range(STEPS):
        model.zero_grad()
        model.forward(*batch(step, rows))
        model.backward()
        norms.append(optimizer.update(1e-3))
        losses.append(model.mean_loss())
    return np.array(losses), np.array(norms), optimizer.params_fp32()


def two_ranks(tmp_path, zero):
    out = tmp_path / f"zero{zero}.npz"
    env = child_env()
    r = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "tests.dp_worker", str(out), str(zero)],
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
    comm = Comm(cpu)
    buf = np.arange(16, dtype=np.float32)
    comm.all_reduce_mean(buf)
    comm.reduce_scatter_mean(buf)
    comm.all_gather(buf)
    assert comm.world == 1 and comm.sum(2.5) == 2.5 and np.array_equal(buf, np.arange(16))


# --- ZeRO-1 without MPI: two ranks as two threads of this process

class ThreadComm(Comm):
    """Comm's collectives for `world` threads of one process, written out with a barrier and
    shared buffers, as MPI defines them (sum, mean, gather): a stand-in that lets GPT2's
    sharded code run here, checked against torch, where no MPI launcher is needed."""

    def __init__(self, rank, hub):
        super().__init__(cpu)
        self.rank, self.world, self.hub = rank, len(hub["slots"]), hub

    def barrier(self):
        self.hub["barrier"].wait(timeout=120)

    def _exchange(self, value):
        self.hub["slots"][self.rank] = value
        self.barrier()
        values = list(self.hub["slots"])
        self.barrier()           # nobody overwrites a slot before all have read them
        return values

    def sum(self, x):
        return math.fsum(self._exchange(float(x)))

    def all_reduce_mean(self, buf):
        buf[...] = np.mean(self._exchange(buf.copy()), axis=0)

    def reduce_scatter_mean(self, buf):
        n = buf.size // self.world
        mine = slice(self.rank * n, (self.rank + 1) * n)
        buf[mine] = np.mean([b[mine] for b in self._exchange(buf.copy())], axis=0)

    def all_gather(self, buf):
        n = buf.size // self.world
        for r, part in enumerate(self._exchange(buf[self.rank * n:(self.rank + 1) * n].copy())):
            buf[r * n:(r + 1) * n] = part


def run_ranks(world, fn):
    """fn(rank, comm) in `world` threads; their results in rank order (a thread's exception is
    raised here)."""
    hub = {"slots": [None] * world, "barrier": threading.Barrier(world)}
    results, errors = [None] * world, []

    def body(rank):
        try:
            results[rank] = fn(rank, ThreadComm(rank, hub))
        except BaseException as e:      # noqa: BLE001 -- handed to the main thread
            errors.append(e)
            hub["barrier"].abort()
    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def zero1_rank(rank, comm, steps, lr=1e-3, weight_decay=0.1, grad_clip=0.5, zero=1):
    """One rank of a ZeRO-1 run (zero=0: plain data parallel): B rows of each (world x B)-row
    batch; (gradient norms, losses, weights)."""
    params = random_params(TINY, seed=21)
    model = GPT2(TINY, cpu, B, T, params=params, comm=comm, zero=zero)
    optimizer = AdamW(model, params, weight_decay=weight_decay, grad_clip=grad_clip)
    norms, losses = [], []
    for step in range(steps):
        inputs, targets = batch(step, comm.world * B)
        rows = slice(rank * B, (rank + 1) * B)
        model.zero_grad()
        model.forward(inputs[rows], targets[rows])
        model.backward()
        model.reduce_gradients()
        norms.append(optimizer.update(lr))
        losses.append(comm.sum(model.mean_loss()) / comm.world)
    return norms, losses, optimizer.params_fp32()


def torch_steps(steps, rows, lr=1e-3, weight_decay=0.1, grad_clip=0.5):
    """The same training in the PyTorch reference: torch's gradient norm, clipping and AdamW."""
    ref = TorchGPT2(TINY, random_params(TINY, seed=21))
    opt = ref.adamw(lr=lr, weight_decay=weight_decay)
    norms, losses = [], []
    for step in range(steps):
        opt.zero_grad()
        _, loss = ref(*batch(step, rows))
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), grad_clip).item())
        opt.step()
        losses.append(loss.item())
    return np.array(norms), np.array(losses), ref.flat()


def test_zero1_gradient_norm_is_torchs_norm_of_the_whole_gradient_on_every_rank():
    # each rank holds half of the reduced gradient: the norm needs the squares of both halves
    results = run_ranks(2, lambda rank, comm: zero1_rank(rank, comm, steps=1))
    norms_ref, _, _ = torch_steps(1, 2 * B)
    for rank, (norms, _, _) in enumerate(results):
        assert abs(norms[0] - norms_ref[0]) <= 1e-5 * norms_ref[0], f"rank {rank}: {norms[0]} vs {norms_ref[0]}"


def test_zero1_over_two_ranks_trains_like_torch_adamw_on_the_whole_batch():
    results = run_ranks(2, lambda rank, comm: zero1_rank(rank, comm, steps=STEPS))
    norms_ref, losses_ref, params_ref = torch_steps(STEPS, 2 * B)
    for rank, (norms, losses, params) in enumerate(results):
        assert_close(norms, norms_ref, 1e-5, f"rank {rank} gradient norms")
        assert_close(losses, losses_ref, 1e-5, f"rank {rank} losses")
        assert_close(params, params_ref, 1e-5, f"rank {rank} weights")


def test_zero1_over_three_ranks_trains_like_torch_adamw_and_gives_the_weights_without_the_padding():
    # 30,080 params: ZeRO-1 pads the flat buffer to a multiple of 8 x 3 (30,096) for three shards
    results = run_ranks(3, lambda rank, comm: zero1_rank(rank, comm, steps=2))
    norms_ref, losses_ref, params_ref = torch_steps(2, 3 * B)
    for rank, (norms, losses, params) in enumerate(results):
        assert params.shape == (30_080,), f"rank {rank}"
        assert_close(norms, norms_ref, 1e-5, f"rank {rank} gradient norms")
        assert_close(params, params_ref, 1e-5, f"rank {rank} weights")


def test_plain_data_parallel_over_two_thread_ranks_trains_like_torch_adamw_on_the_whole_batch():
    # without ZeRO every rank holds m and v for all the weights and updates all of them
    results = run_ranks(2, lambda rank, comm: zero1_rank(rank, comm, steps=STEPS, zero=0))
    norms_ref, losses_ref, params_ref = torch_steps(STEPS, 2 * B)
    for rank, (norms, losses, params) in enumerate(results):
        assert_close(norms, norms_ref, 1e-5, f"rank {rank} gradient norms")
        assert_close(params, params_ref, 1e-5, f"rank {rank} weights")


def three_ranks_model(zero):
    """Rank 0's model of three processes (GPT2 reads the group's size to lay out its buffers)."""
    return GPT2(TINY, cpu, 1, 8, params=random_params(TINY, seed=28), comm=SimpleNamespace(rank=0, world=3), zero=zero)


def test_zero1_pads_the_flat_buffers_to_the_next_multiple_of_8_elements_per_rank():
    # equal shards, each a whole number of 16-byte fp32 groups: TINY's parameters rounded up to 3 x 8
    n = num_parameters(TINY)
    padded = next(m for m in range(n, n + 24) if m % 24 == 0)
    assert n % 24 != 0, "TINY needs no padding: the test would not see it"
    model = three_ranks_model(zero=1)
    assert model.params_flat.size == model.grads_flat.size == padded


def test_without_zero1_the_flat_buffers_hold_exactly_the_parameters():
    model = three_ranks_model(zero=0)
    assert model.params_flat.size == model.grads_flat.size == num_parameters(TINY)


def test_a_shard_s_pieces_are_the_nonempty_parts_of_the_tensors_it_overlaps():
    # tensors of 6, 4 and 2 elements at offsets 0, 6 and 10; [6, 11) holds all of b and half of c,
    # none of a (which ends where the shard begins), so one AdamW call per piece, none empty
    shapes = {"a": (2, 3), "b": (4,), "c": (2,)}
    assert pieces(shapes, 6, 11) == [(1, "b", 6, 10), (2, "c", 10, 11)]
    assert pieces(shapes, 0, 6) == [(0, "a", 0, 6)]


# --- the command line under mpiexec

def mpirun(n, *args, check=True):
    from tests.test_train import ROOT as root
    env = child_env()
    r = subprocess.run([mpiexec(), "-n", str(n), sys.executable, str(root / "train_gpt2.py"),
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
    one_run = mpirun(1, *tiny_run, "-b", 4, "-x", 4, "-v", 2, "-m", 1, "--shuffle", 0)
    one = float_losses(one_run.stdout)
    two = mpirun(2, *tiny_run, "-b", 2, "-x", 4, "-v", 2, "-m", 1, "-z", zero, "--shuffle", 0)
    assert "2 processes" in two.stdout
    assert two.stdout.count("step    1/4") == 1, "only rank 0 prints"
    for step, loss in float_losses(two.stdout).items():
        assert abs(loss - one[step]) < 2e-6, step
    # the val loss too: each process's share of every val batch, averaged over both
    vals_one, vals_two = (re.findall(r"^val loss (\S+)$", r.stdout, re.M) for r in (one_run, two))
    assert len(vals_one) == len(vals_two) == 3
    for a, b in zip(vals_one, vals_two):
        assert abs(float(a) - float(b)) < 2e-6


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


@needs_mpi
def test_rank_0_alone_writes_main_log(tiny_run, tmp_path):
    mpirun(2, *tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out")
    log = (tmp_path / "out" / "main.log").read_text().splitlines()
    assert [line.split()[0] for line in log] == ["s:1", "s:2"]


@needs_mpi
def test_auto_batch_with_two_processes_is_a_one_line_error(tiny_run):
    r = mpirun(2, *tiny_run, "-b", "auto", "-x", 1, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: -b auto runs in a single process; with 2, give -b"


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
