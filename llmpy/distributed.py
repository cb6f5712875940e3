"""Data parallel training across processes, one per GPU (or per CPU process): mpi4py gives the
rank and world size (mpirun, srun or a hostfile across nodes) and carries small host values;
the flat gradient and parameter buffers go through NCCL on the GPU (cupy.cuda.nccl, its unique
id broadcast over MPI) and through MPI's own collectives on the CPU.

The gradient reduction can also run in buckets, started while the backward still runs
(llmpy/buckets.py): on the GPU each bucket goes to NCCL on a second stream, ordered after the
backward's kernels by an event, and the update's stream waits for that stream's last event; on
the CPU each is an MPI non-blocking collective (Iallreduce, Ireduce_scatter), waited for before
the update. MPICH moves a non-blocking collective along only inside MPI calls unless
MPICH_ASYNC_PROGRESS=1, so on the CPU the overlap is mostly in name; the bits are the point there.

A run started without MPI, or by mpirun with one process, gets a Comm of world size 1 whose
collectives do nothing, so the training code has one path.

A failure on one process must end the job: the others would wait for it in their next
collective forever. Checks that can fail on one process only (its data, its state file, its
checkpoint write) run inside Comm.together(), so every process raises the same error at once;
anything else that stops one process ends them all with abort().
"""
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from llmpy import JobError, LlmpyError, nccl_log
from llmpy.buckets import shard_counts

# set by mpirun (Open MPI, MPICH/Hydra, Intel MPI) or srun: the signs that we run under MPI
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS")


class Comm:
    """One process's view of the group. Buffers are flat, contiguous, and for the sharded ops
    (ZeRO-1) a multiple of world * 8 elements long, so each rank's shard is an equal, 16-byte
    aligned slice: shard(buf) = buf[rank * n / world : (rank + 1) * n / world]."""

    def __init__(self, ops, mpi_comm=None):
        self.ops, self.mpi = ops, mpi_comm
        self.rank = mpi_comm.Get_rank() if mpi_comm else 0
        self.world = mpi_comm.Get_size() if mpi_comm else 1
        self.local_rank = 0
        self.nccl = None
        self._pending = []      # MPI: (request, what to do once it is complete)
        self._scratch = None    # MPI: where a shard's buckets are received (ZeRO-1)
        if mpi_comm is not None:
            from mpi4py import MPI
            self.local_rank = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
            if ops.collectives == "nccl":
                self._init_nccl()

    def _init_nccl(self):
        import cupy as cp
        from cupy.cuda import nccl
        cp.cuda.Device(self.local_rank).use()      # one GPU per process on each node
        log = nccl_log.log_to_file() if self.rank == 0 else None
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.bcast(uid, root=0)
        self.nccl = nccl.NcclCommunicator(self.world, uid, self.rank)
        # NCCL connects the ranks at their first collective; after it, rank 0's log names the
        # transports, in one line (llmpy/nccl_log.py)
        one = cp.ones(1, dtype=np.float32)
        self._nccl("allReduce", one, one, 1, nccl.NCCL_SUM)
        cp.cuda.Device().synchronize()
        if log:
            with open(log, errors="replace") as f:
                self.say(nccl_log.summary(f.read(), log))
        # the buckets' stream: non-blocking, so that it never waits on the legacy default stream
        # the training runs on; events order it after the backward and the update after it
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._ready = cp.cuda.Event(disable_timing=True)
        self._done = cp.cuda.Event(disable_timing=True)

    # -- faults ---------------------------------------------------------------------------------

    def collective_fault(self):
        """NCCL's own report of an asynchronous error on this process's communicator (a peer's
        connection lost, a remote process gone: ncclCommGetAsyncError) as text, or None. Safe to
        call from another thread while a collective runs: the watchdog polls it."""
        if self.nccl is None:
            return None
        try:
            self.nccl.check_async_error()
        except Exception as e:      # noqa: BLE001 -- CuPy's NcclError, whatever NCCL reports
            return str(e)
        return None

    def abort_collectives(self):
        """Release this process from NCCL calls that will never complete (ncclCommAbort), so that
        it can exit: the watchdog's thread calls it before ending the job."""
        if self.nccl is not None:
            try:
                self.nccl.abort()
            except Exception:       # noqa: BLE001 -- the job ends the same either way
                pass

    # -- host values (losses, norms) -----------------------------------------------------------

    def say(self, *args, **kwargs):
        """print, on rank 0 only: one process speaks for the group."""
        if self.rank == 0:
            print(*args, **kwargs)

    def sum(self, x):
        """Sum of a Python float over the ranks."""
        if not self.mpi:
            return float(x)
        # the buffer form: mpi4py's pickled allreduce holds the GIL while it waits, which
        # would keep the watchdog's thread from ever running
        from mpi4py import MPI
        buf = np.array([x], dtype=np.float64)
        self.mpi.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return float(buf[0])

    @contextlib.contextmanager
    def together(self, context=""):
        """Run the block on every rank, then agree on how it went: where it raised an LlmpyError
        (or an OSError) on any rank, every rank raises JobError with the first failing rank's
        message, prefixed by `context` (and by the rank, unless every rank failed alike). One
        collective, so every rank must enter the block."""
        error = None
        try:
            yield
        except OSError as e:
            error = LlmpyError(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        except LlmpyError as e:
            error = e
        if self.mpi is None:
            if error is not None:
                raise LlmpyError(f"{context}{error}") from None
            return
        from mpi4py import MPI
        failed = np.array([error is not None], dtype=np.int32)
        self.mpi.Allreduce(MPI.IN_PLACE, failed, op=MPI.SUM)
        if failed[0]:
            messages = self.mpi.allgather(None if error is None else str(error))
            first = next(r for r, m in enumerate(messages) if m is not None)
            who = "" if messages.count(messages[first]) == self.world else f"rank {first}: "
            raise JobError(f"{context}{who}{messages[first]}", speaker=self.rank == 0)

    # -- flat device buffers -------------------------------------------------------------------

    def shard(self, buf):
        n = buf.size // self.world
        return buf[self.rank * n:(self.rank + 1) * n]

    def all_reduce_mean(self, buf):
        """buf <- the mean of buf over the ranks, in place."""
        if self.world == 1:
            return
        if self.nccl:
            self._nccl("allReduce", buf, buf, buf.size, _nccl_op("NCCL_AVG", 4))
        else:
            from mpi4py import MPI
            self.mpi.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf /= self.world

    def reduce_scatter_mean(self, buf):
        """This rank's shard of buf <- the mean over the ranks of that shard (ZeRO-1's gradient
        reduction); the rest of buf is left undefined."""
        if self.world == 1:
            return
        mine = self.shard(buf)
        if self.nccl:     # in place: NCCL reads all of buf and writes this rank's slice of it
            self._nccl("reduceScatter", buf, mine, mine.size, _nccl_op("NCCL_AVG", 4))
        else:
            from mpi4py import MPI
            out = np.empty_like(mine)
            self.mpi.Reduce_scatter_block(buf, out, op=MPI.SUM)
            np.divide(out, self.world, out=mine)

    def all_gather(self, buf):
        """Every rank's shard of buf, gathered into all of buf on every rank (ZeRO-1's params)."""
        if self.world == 1:
            return
        mine = self.shard(buf)
        if self.nccl:
            self._nccl("allGather", mine, buf, mine.size)
        else:
            from mpi4py import MPI
            self.mpi.Allgather(MPI.IN_PLACE, buf)

    # -- buckets, started during the backward ----------------------------------------------------

    def start_all_reduce_mean(self, buf, ranges):
        """Start buf[start:end] <- its mean over the ranks, for each (start, end) in ranges;
        wait() finishes it. The same collective and arithmetic as all_reduce_mean, per range."""
        if self.world == 1:
            return
        if self.nccl:
            self._nccl_group([("allReduce", buf[a:b], buf[a:b], b - a, _nccl_op("NCCL_AVG", 4))
                              for a, b in ranges])
            return
        from mpi4py import MPI
        for a, b in ranges:
            part = buf[a:b]
            request = self.mpi.Iallreduce(MPI.IN_PLACE, part, op=MPI.SUM)
            self._pending.append((request, lambda part=part: np.divide(part, self.world, out=part)))

    def start_reduce_scatter_mean(self, buf, ranges):
        """Start: this rank's shard of buf, where the ranges cover it, <- its mean over the
        ranks (ZeRO-1); wait() finishes it. A range may span several shards: each rank gets its
        own part of it (MPI's Ireduce_scatter with per-rank counts; NCCL, which has no such
        call, reduces each part to its owner)."""
        if self.world == 1:
            return
        n = buf.size // self.world
        lo = self.rank * n
        if self.nccl:
            calls = []
            for a, b in ranges:
                start = a
                for root, count in enumerate(shard_counts(a, b, buf.size, self.world)):
                    if count:
                        part = buf[start:start + count]
                        calls.append(("reduce", part, part, count, _nccl_op("NCCL_AVG", 4), root))
                        start += count
            self._nccl_group(calls)
            return
        from mpi4py import MPI
        if self._scratch is None or self._scratch.size != n or self._scratch.dtype != buf.dtype:
            self._scratch = np.empty(n, dtype=buf.dtype)
        mine = self.shard(buf)
        for a, b in ranges:
            s, e = (min(max(x - lo, 0), n) for x in (a, b))     # this rank's part, in its shard
            counts = shard_counts(a, b, buf.size, self.world)
            request = self.mpi.Ireduce_scatter(buf[a:b], self._scratch[s:e], counts, op=MPI.SUM)
            self._pending.append((request, lambda s=s, e=e: np.divide(self._scratch[s:e], self.world,
                                                                      out=mine[s:e])))

    def wait(self):
        """Every bucket started so far is reduced before the work queued after this call: on
        the GPU the current stream waits for the buckets' stream (the host does not wait); on
        the CPU the requests complete and their means are taken."""
        if self.nccl:
            import cupy as cp
            self._done.record(self.stream)
            cp.cuda.get_current_stream().wait_event(self._done)
            return
        if self._pending:
            from mpi4py import MPI
            MPI.Request.Waitall([request for request, _ in self._pending])
            for _, finish in self._pending:
                finish()
            self._pending = []

    def _nccl_group(self, calls):
        """NCCL calls [(name, send, recv, count, *args)] as one group on the buckets' stream,
        after the work queued so far on the current stream."""
        import cupy as cp
        from cupy.cuda import nccl
        self._ready.record(cp.cuda.get_current_stream())
        self.stream.wait_event(self._ready)
        nccl.groupStart()
        try:
            for name, send, recv, count, *args in calls:
                self._nccl(name, send, recv, count, *args, stream=self.stream)
        finally:
            nccl.groupEnd()

    def _nccl(self, name, send, recv, count, *args, stream=None):
        import cupy as cp
        stream = stream or cp.cuda.get_current_stream()
        getattr(self.nccl, name)(send.data.ptr, recv.data.ptr, count, _nccl_dtype(send.dtype),
                                 *args, stream.ptr)


def _nccl_op(name, value):
    from cupy.cuda import nccl
    return getattr(nccl, name, value)


def _nccl_dtype(dtype):
    from cupy.cuda import nccl
    if np.dtype(dtype) == np.float32:
        return nccl.NCCL_FLOAT32
    if np.dtype(dtype).name == "bfloat16":
        return getattr(nccl, "NCCL_BFLOAT16", 9)     # ncclBfloat16 in nccl.h
    raise ValueError(f"no NCCL type for {dtype}")


def several_processes():
    """Whether this process is one of several in an MPI job that is still running."""
    MPI = sys.modules.get("mpi4py.MPI")
    return (MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized()
            and MPI.COMM_WORLD.Get_size() > 1)


def rank_prefix():
    """"rank 3: " in a job of several processes, so that a line says which one failed."""
    if not several_processes():
        return ""
    return f"rank {sys.modules['mpi4py.MPI'].COMM_WORLD.Get_rank()}: "


def abort(status=1):
    """End this process now and, in an MPI job, every other process of the job (MPI_Abort):
    callable from any thread, whatever the main thread is waiting for."""
    sys.stdout.flush()
    sys.stderr.flush()
    if several_processes():
        # the launcher forwards this process's output through a pipe and may tear the job
        # down before it has read the last line; a moment first keeps that line
        time.sleep(0.5)
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(status)
    os._exit(status)


def init(ops):
    """The Comm of this process: over MPI's world when started by an MPI launcher with more
    than one process (then each process takes the GPU of its rank within its node)."""
    if not any(v in os.environ for v in _LAUNCHER_VARS):
        return Comm(ops)      # no launcher: don't even import MPI
    problem = launcher_mismatch(os.environ, mpi_library())
    if problem:
        raise LlmpyError(problem)
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    return Comm(ops, world if world.Get_size() > 1 else None)


def mpi_library():
    """"mpich" or "openmpi": the MPI library that mpi4py will load, found before MPI starts
    (mpi4py's own choice; None where it cannot be told)."""
    try:
        from mpi4py import _mpiabi
        return _mpiabi._get_mpiabi()
    except Exception:       # noqa: BLE001 -- an mpi4py without the lookup: no check
        return None


def launcher():
    """The mpiexec that starts ranks mpi4py can join: this environment's (the mpich wheel's)
    where mpi4py loads MPICH from it, else the one on PATH."""
    own = Path(sys.prefix) / "bin" / "mpiexec"
    return str(own) if own.exists() and mpi_library() == "mpich" else shutil.which("mpiexec")


def launcher_mismatch(environ, library):
    """Why ranks started this way cannot join (Open MPI's mpirun starting processes whose mpi4py
    loads MPICH: every rank would abort in MPI's start-up), or None."""
    if library == "mpich" and "OMPI_COMM_WORLD_SIZE" in environ:
        return (f"started by Open MPI's mpirun, but mpi4py loads MPICH's library (the mpich wheel): "
                f"start it with {launcher()} -n N ..., or, to use your Open MPI, uninstall the mpich "
                "wheel from this environment (pip uninstall mpich)")
    return None
