"""Multi-GPU checks on one node: the same losses as one GPU at the same total batch, and the
throughput scaling, by running train_gpt2.py under mpirun.

    python dev/multigpu.py --gpus 2              # equality (plain and ZeRO-1), then 1 vs 2 GPUs
    python dev/multigpu.py --gpus 4 --model d48 --B 8 --recompute 1
    python dev/multigpu.py --gpus 2 --overlap    # --overlap 0 against 1: the same bits, then tokens/s
    python dev/multigpu.py --gpus 2 --overlap --transport socket --socket_threads 1 --sockets 1

Equality: G processes of micro-batch B against one process accumulating G micro-batches of B
(-d G*B*T), from the same fresh weights on the same data in file order (--shuffle 0: shuffled, each
process draws its own order, as in llm.c); bf16 and a different reduction order
make them agree to about 1e-2 of the loss, not bit for bit. Throughput: median tokens/s over
the steps after the first few, one GPU at B against G GPUs at B each with ZeRO-1.

--overlap instead compares the gradient reduction in one call after the backward (--overlap 0)
with the buckets started during it (--overlap 1): the same printed losses and norms, step for
step (bit for bit with 2 GPUs; with more, NCCL may sum a bucket's elements in another order than
the one call's), plain and ZeRO-1, with 2 micro-steps a step; then the tokens/s of each.
--transport socket takes NCCL off NVLink and shared memory onto its socket transport over the
loopback interface, so that the GPUs of one host talk as if on different hosts; --sockets and
--socket_threads (NCCL_NSOCKS_PERTHREAD, NCCL_SOCKET_NTHREADS) set how much bandwidth it gets.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# this Python's own launcher (make install's MPICH, matching its mpi4py) where it has one
MPIEXEC = str(Path(sys.executable).parent / "mpiexec") if (Path(sys.executable).parent / "mpiexec").exists() \
    else shutil.which("mpiexec") or "mpiexec"
STEP = re.compile(r"^step +(\d+)/\d+ \| loss (\S+) \|.*\| (\d+) tok/s")
ENV = dict(os.environ, NCCL_NVLS_ENABLE="0", PYTHONUNBUFFERED="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")   # Open MPI, as root


def train(gpus, *flags, log=None):
    """{step: (loss, tok/s)} of one train_gpt2.py run on `gpus` processes."""
    cmd = [sys.executable, str(ROOT / "train_gpt2.py"), "-v", "0", "-s", "0", *map(str, flags)]
    if gpus > 1:
        cmd = [MPIEXEC, "-n", str(gpus), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV)
    for line in r.stdout.splitlines():
        if line.startswith("NCCL "):        # the transport NCCL chose, rank 0's line
            print(line)
    if log:
        Path(log).write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return {int(m[1]): (m[2], int(m[3])) for m in map(STEP.match, r.stdout.splitlines()) if m}


def socket_transport(sockets, threads):
    """NCCL's socket transport over loopback, for the GPUs of one host: no NVLink or PCIe
    peer access (P2P), no shared memory (SHM), no InfiniBand."""
    ENV.update(NCCL_P2P_DISABLE="1", NCCL_SHM_DISABLE="1", NCCL_IB_DISABLE="1", NCCL_SOCKET_IFNAME="lo",
               NCCL_NSOCKS_PERTHREAD=str(sockets), NCCL_SOCKET_NTHREADS=str(threads))


def overlap(args, common, log):
    """--overlap 0 against --overlap 1 on G GPUs: the same step lines, then tokens/s."""
    G, T, Bc = args.gpus, args.T, args.check_B
    steps = min(args.steps, 10)
    for zero in (0, 1):
        flags = [*common, "-b", Bc, "-d", 2 * G * Bc * args.T, "-x", steps, "-z", zero]
        one = train(G, *flags, "--overlap", 0, log=log(f"overlap0_z{zero}"))
        buckets = train(G, *flags, "--overlap", 1, log=log(f"overlap1_z{zero}"))
        same = [s for s in one if one[s][0] == buckets[s][0]]
        print(f"-z {zero}, 2 micro-steps: {len(same)}/{len(one)} steps print the same loss with and without overlap"
              + ("" if len(same) == len(one) else f"; first differing step {min(set(one) - set(same))}"))
    print(f"\n{args.model}, B={args.B} per GPU, T={T}, {G} GPUs: median tokens/s over steps 4..{args.steps}")
    print("-z | --overlap 0 | --overlap 1 | ratio")
    for zero in (0, 1):
        rates = [np.median([tok for s, (_, tok) in train(
            G, *common, "-b", args.B, "-x", args.steps, "-z", zero, "--overlap", o,
            log=log(f"speed_overlap{o}_z{zero}")).items() if s > 3]) for o in (0, 1)]
        print(f"{zero:2d} | {rates[0]:11,.0f} | {rates[1]:11,.0f} | {rates[1] / rates[0]:.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--model", default="d12")
    p.add_argument("--B", type=int, default=64, help="micro-batch per GPU for the throughput runs")
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--check_B", type=int, default=8, help="micro-batch for the equality runs")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--recompute", type=int, default=0)
    p.add_argument("--logs", default=None, help="folder for the runs' full output")
    p.add_argument("--overlap", action="store_true", help="compare --overlap 0 and 1 instead")
    p.add_argument("--bucket_mb", type=float, default=25.0)
    p.add_argument("--transport", default="nccl", choices=("nccl", "socket"),
                   help="socket: NCCL's socket transport over loopback, as if each GPU were on its own host")
    p.add_argument("--sockets", type=int, default=1, help="with --transport socket: NCCL_NSOCKS_PERTHREAD")
    p.add_argument("--socket_threads", type=int, default=1, help="with --transport socket: NCCL_SOCKET_NTHREADS")
    args = p.parse_args()
    G, T = args.gpus, args.T
    common = ["-e", args.model, "-t", T, "-r", args.recompute, "-l", 3e-4, "--bucket_mb", args.bucket_mb]
    log = (lambda name: Path(args.logs) / f"{name}.log") if args.logs else (lambda name: None)
    if args.transport == "socket":
        socket_transport(args.sockets, args.socket_threads)
    if args.overlap:
        overlap(args, common, log)
        return

    Bc, steps = args.check_B, min(args.steps, 10)
    total = G * Bc * T
    equal = [*common, "-b", Bc, "-d", total, "-x", steps, "--shuffle", 0]
    one = train(1, *equal, log=log("equal_1gpu"))
    plain = train(G, *equal, "-z", 0, log=log(f"equal_{G}gpu"))
    zero = train(G, *equal, "-z", 1, log=log(f"equal_{G}gpu_z1"))
    print(f"{args.model}: losses at the same total batch ({total:,} tokens per step)")
    print(f"step | 1 GPU, {G} micro-steps | {G} GPUs | {G} GPUs ZeRO-1")
    for s in sorted(one):
        print(f"{s:4d} | {float(one[s][0]):20.6f} | {float(plain[s][0]):8.6f} | {float(zero[s][0]):14.6f}")
    worst = max(abs(float(run[s][0]) - float(one[s][0])) / float(one[s][0]) for run in (plain, zero) for s in one)
    print(f"largest relative difference from 1 GPU: {worst:.2e}")

    B = args.B
    rates = {}
    for gpus in (1, G):
        run = train(gpus, *common, "-b", B, "-x", args.steps, "-z", int(gpus > 1),
                    log=log(f"speed_{gpus}gpu"))
        rates[gpus] = np.median([tok for s, (_, tok) in run.items() if s > 3])
    print(f"\n{args.model}, B={B} per GPU, T={T}: median tokens/s over steps 4..{args.steps}")
    print("GPUs | tokens/s | scaling efficiency")
    for gpus, rate in rates.items():
        print(f"{gpus:4d} | {rate:10,.0f} | {rate / (gpus * rates[1]):.3f}")


if __name__ == "__main__":
    main()
