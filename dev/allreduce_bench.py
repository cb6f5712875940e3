"""Time the gradient all-reduce alone, as training runs it (llmpy.distributed: NCCL on the GPU,
MPI on the CPU), and state its bus bandwidth: what the ring moves per GPU, 2(n-1)/n * bytes,
over the time; compare it with dev/scaling_model.py's --gbps.

    mpirun -np 2 python dev/allreduce_bench.py                       # d12's gradients, bf16
    NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=lo \\
        mpirun -np 2 python dev/allreduce_bench.py --mb 25           # sockets over loopback

Rank 0 prints one line: bytes, median ms of --reps calls after 3 warm-ups, algorithm and bus
bandwidth in GB/s and Gb/s.
"""
import argparse
import sys
import time

import numpy as np

from llmpy import backends, distributed
from llmpy.config import from_descriptor, num_parameters


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=None, help="MB to reduce (default: all of d12's gradients)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    if args.reps < 1 or (args.mb is not None and args.mb <= 0):
        p.error("--reps and --mb must be positive")
    ops = backends.load(args.device)
    comm = distributed.init(ops)
    if comm.world < 2:
        sys.exit("dev/allreduce_bench.py: run it with several processes (mpirun -np 2 ...)")
    itemsize = np.dtype(ops.param_dtype).itemsize
    count = int(args.mb * 1e6 / itemsize) if args.mb else num_parameters(from_descriptor("d12"))
    buf = ops.to_device(np.random.default_rng(comm.rank).normal(size=count).astype(ops.param_dtype))
    times = []
    for i in range(3 + args.reps):
        ops.synchronize()
        comm.mpi.Barrier()          # every rank starts the timed call together
        t0 = time.perf_counter()
        comm.all_reduce_mean(buf)
        ops.synchronize()
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times[3:]))
    nbytes = count * itemsize
    bus = 2 * (comm.world - 1) / comm.world * nbytes / seconds
    comm.say(f"all-reduce of {nbytes / 1e6:,.1f} MB over {comm.world} ranks ({ops.name}): {seconds * 1e3:.3f} ms, "
             f"algorithm bandwidth {nbytes / seconds / 1e9:.2f} GB/s, bus bandwidth {bus / 1e9:.2f} GB/s "
             f"= {bus * 8 / 1e9:.1f} Gb/s")


if __name__ == "__main__":
    main()
