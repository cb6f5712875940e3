"""Training throughput of llmpy against PyTorch on the same GPU, config and data, in one run.

    python dev/bench.py                       # d12, B=64, T=1024: the figure in the README
    python dev/bench.py --model d24 --B 32 --steps 20
    python dev/bench.py --profile             # also: where one llmpy step's time goes, per op

Each side trains from the same fresh weights on the Shakespeare shards; the first --warmup steps
(NVRTC/torch.compile, cuBLAS heuristics) are not timed; the rest are timed one step each with
CUDA events and the median is reported. PyTorch runs as a tuned user would run it:
torch.compile, flash attention (SDPA), bf16 autocast, fused AdamW.
"""
import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # dev/ is not a package

import cupy as cp      # noqa: E402
import numpy as np     # noqa: E402

from llmpy import cuda                         # noqa: E402
from llmpy.config import from_descriptor       # noqa: E402
from llmpy.dataloader import DataLoader        # noqa: E402
from llmpy.gpt2 import GPT2, init_params       # noqa: E402
from llmpy.mfu import mfu                      # noqa: E402

LR = 3e-4
# measured on the same H200 machines, not in this run (../shared/GPU_NOTES.md)
LLM_C_FIGURES = ("llm.c on an H200, d12 B=64 T=1024 (GPU_NOTES.md): ~115 ms/step, ~567K tokens/s "
                 "with cuDNN flash attention; ~170 ms, ~382K with its own attention kernels")


def median_step_ms(step, steps, warmup, sync):
    """Median ms of step() over `steps` timed runs after `warmup`; CUDA events via `sync`."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        times.append(sync(step))
    return float(np.median(times))


def cupy_timed(fn):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end)


def bench_llmpy(cfg, params, loader, args):
    model = GPT2(cfg, cuda, args.B, args.T, params=params)
    losses = []

    def step():
        inputs, targets = loader.next_batch()
        model.zero_grad()
        model.forward_backward(inputs, targets)
        model.update(LR)
        losses.append(model.mean_loss())
    ms = median_step_ms(step, args.steps, args.warmup, cupy_timed)
    memory = cp.get_default_memory_pool().total_bytes()
    if args.profile:
        profile(model, loader)
    return ms, memory, losses


class TimedOps:
    """The cuda ops module with a pair of CUDA events around every op call."""

    def __init__(self, ops):
        self._ops, self.calls = ops, []

    def __getattr__(self, name):
        attr = getattr(self._ops, name)
        if not callable(attr) or name in ("to_device", "to_host", "synchronize", "device_name",
                                          "memory_in_use", "attention_saved"):
            return attr

        def timed(*a, **k):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            result = attr(*a, **k)
            end.record()
            self.calls.append((name, start, end))
            return result
        return timed


def profile(model, loader):
    """One step with every op timed: the per-kernel breakdown of dev/cuda/README.md."""
    timed = TimedOps(model.ops)
    model.ops = timed
    inputs, targets = loader.next_batch()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    model.zero_grad()
    model.forward(inputs, targets)
    model.backward()
    model.update(LR)
    end.record()
    end.synchronize()
    model.ops = timed._ops
    total = cp.cuda.get_elapsed_time(start, end)
    per_op = defaultdict(float)
    for name, s, e in timed.calls:
        per_op[name] += cp.cuda.get_elapsed_time(s, e)
    print(f"\nwhere one step's {total:.1f} ms go (ops timed one by one; the rest is host gaps):")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {ms:8.2f} ms {100 * ms / total:5.1f}%")
    print(f"  {'(between ops)':32s} {total - sum(per_op.values()):8.2f} ms")


def bench_torch(cfg, params, loader, args):
    import torch
    from tests.torch_gpt2 import TorchGPT2

    torch.backends.cuda.matmul.allow_tf32 = True
    model = TorchGPT2(cfg, params, dtype=torch.float32, device="cuda")
    optimizer = model.adamw(lr=LR, weight_decay=0.0, fused=True)
    compiled = torch.compile(model)

    losses = []   # kept on the GPU until the end: reading each one would sync every step

    def step():
        inputs, targets = loader.next_batch()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = compiled(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.detach())

    def timed(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    torch.cuda.reset_peak_memory_stats()
    ms = median_step_ms(step, args.steps, args.warmup, timed)
    return ms, torch.cuda.max_memory_allocated(), [x.item() for x in losses]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="d12")
    p.add_argument("--B", type=int, default=64)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data", default="dev/data/shakespeare/shakespeare_train.bin")
    p.add_argument("--profile", action="store_true", help="per-op time breakdown of one llmpy step")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--curve-every", type=int, default=10, help="loss table: every N-th step")
    args = p.parse_args()

    cfg = from_descriptor(args.model)
    params = init_params(cfg)
    tokens = args.B * args.T
    device = cuda.device_name()
    rows = []
    t0 = time.time()
    ms, memory, losses = bench_llmpy(cfg, params, DataLoader(args.data, args.B, args.T), args)
    rows.append(("llmpy", ms, memory, losses))
    cp.get_default_memory_pool().free_all_blocks()      # the model is gone: room for PyTorch
    print(f"llmpy done in {time.time() - t0:.0f} s", flush=True)
    if not args.no_torch:
        ms, memory, losses = bench_torch(cfg, params, DataLoader(args.data, args.B, args.T), args)
        rows.append(("pytorch", ms, memory, losses))

    print(f"\n{args.model}, B={args.B}, T={args.T}, {device}, median of {args.steps} steps after {args.warmup}")
    if len(rows) == 2:      # same weights, same batches, same lr: the loss curves should agree
        print("\nstep | llmpy loss | pytorch loss")
        for i in range(0, len(rows[0][3]), args.curve_every):
            print(f"{i + 1:4d} | {rows[0][3][i]:10.4f} | {rows[1][3][i]:12.4f}")
    print(f"\n{args.model}, B={args.B}, T={args.T}, {device}, median of {args.steps} steps after {args.warmup}")
    print(f"{'system':8s} | {'ms/step':>8s} | {'tokens/s':>10s} | {'MFU':>6s} | {'peak GiB':>8s} | last loss")
    for name, ms, memory, losses in rows:
        fraction = mfu(cfg, args.T, tokens, ms / 1000, device)
        mfu_text = "n/a" if fraction is None else f"{100 * fraction:.1f}%"
        print(f"{name:8s} | {ms:8.2f} | {tokens / ms * 1000:10.0f} | {mfu_text:>6s} | "
              f"{memory / 2**30:8.2f} | {losses[-1]:.4f}")
    if len(rows) == 2:
        print(f"llmpy / pytorch throughput: {rows[1][1] / rows[0][1]:.3f}x")
    if (args.model, args.B, args.T) == ("d12", 64, 1024):
        print(LLM_C_FIGURES)


if __name__ == "__main__":
    main()
