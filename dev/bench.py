"""Training throughput of llmpy against PyTorch on the same GPU, config and data, in one run.

    python dev/bench.py                       # d12, B=64, T=1024: the figure in the README
    python dev/bench.py --model d24 --B 32 --steps 20
    python dev/bench.py --profile             # also: where one llmpy step's time goes, per kernel

On a GPU with FP8 tensor cores (Ada, Hopper) llmpy runs twice, bf16 and --fp8 1 (`--no-fp8`: bf16
only); the FP8 run's MFU counts its FLOPs against the bf16 peak, as every other row's, and once
more against the FP8 peak (twice the bf16 one).

Each side trains from the same fresh weights on the Shakespeare shards; the first --warmup steps
(NVRTC/torch.compile, cuBLAS heuristics) are not timed; the rest are timed one step each with
CUDA events and the median is reported. PyTorch runs as a tuned user would run it:
torch.compile, flash attention (SDPA), bf16 autocast, fused AdamW.
"""
import argparse
import time
from collections import defaultdict

import cupy as cp

from llmpy import backends, cuda
from llmpy.config import from_descriptor
from llmpy.dataloader import DataLoader
from llmpy.gpt2 import GPT2, init_params
from llmpy.mfu import mfu
from llmpy.optim import AdamW
from llmpy.testing.timing import median_ms

LR = 3e-4
# measured on the same H200 machines, not in this run (docs/performance.md)
LLM_C_FIGURES = ("llm.c on an H200, d12 B=64 T=1024 (docs/performance.md): ~115 ms/step, ~567K tokens/s "
                 "with cuDNN flash attention; ~170 ms, ~382K with its own attention kernels")


def bench_llmpy(cfg, params, loader, args, fp8=0):
    model = GPT2(cfg, cuda, args.B, args.T, params=params, fp8=fp8)
    optimizer = AdamW(model, params)
    losses = []

    def step():
        inputs, targets = loader.next_batch()
        model.zero_grad()
        model.forward_backward(inputs, targets)
        optimizer.update(LR)
        losses.append(model.mean_loss())
    ms = median_ms(step, args.steps, args.warmup)
    memory = cp.get_default_memory_pool().total_bytes()
    if args.profile:
        timed_steps = len(losses)
        profile(step)
        del losses[timed_steps:]      # the loss curve compares the timed steps only
    return ms, memory, losses


def profile(step, steps=4):
    """The GPU's timeline over `steps` training steps run as the timed ones are (CUDA graph and
    all), from CUPTI's kernel records (through torch.profiler, which sees every kernel of the
    process): each kernel's time per step, and the time the GPU sat idle between them."""
    import json
    import tempfile

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as cupti_trace
    cp.cuda.Device().synchronize()
    with cupti_trace(activities=[ProfilerActivity.CUDA], acc_events=True) as trace:
        for _ in range(steps):
            step()
        cp.cuda.Device().synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        trace.export_chrome_trace(f.name)
        records = json.load(open(f.name))["traceEvents"]
    gpu = sorted((e for e in records if e.get("ph") == "X" and
                  e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")), key=lambda e: e["ts"])
    span = (gpu[-1]["ts"] + gpu[-1]["dur"] - gpu[0]["ts"]) / 1000 / steps
    per_kernel = defaultdict(lambda: [0, 0.0])
    for e in gpu:
        per_kernel[e["name"]][0] += 1
        per_kernel[e["name"]][1] += e["dur"] / 1000 / steps
    busy = sum(ms for _, ms in per_kernel.values())
    print(f"\nwhere one step's {span:.1f} ms go on the GPU (CUPTI, {steps} steps):")
    for name, (calls, ms) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        print(f"  {ms:8.3f} ms {100 * ms / span:5.1f}% {calls / steps:6.0f} calls  {name[:90]}")
    print(f"  {span - busy:8.3f} ms {100 * (span - busy) / span:5.1f}%         idle between kernels")


def bench_torch(cfg, params, loader, args):
    import torch
    from llmpy.testing.torch_gpt2 import TorchGPT2

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

    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(step, args.steps, args.warmup)
    return ms, torch.cuda.max_memory_allocated(), [x.item() for x in losses]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="d12")
    p.add_argument("--B", type=int, default=64)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data", default="dev/data/shakespeare/shakespeare_train.bin")
    p.add_argument("--profile", action="store_true",
                   help="per-kernel time breakdown of llmpy's steps (CUPTI through torch.profiler)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--no-fp8", action="store_true", help="skip llmpy's --fp8 1 run")
    p.add_argument("--curve-every", type=int, default=10, help="loss table: every N-th step")
    args = p.parse_args()

    cfg = from_descriptor(args.model)
    params = init_params(cfg)
    tokens = args.B * args.T
    device = cuda.device_name()
    rows = []
    t0 = time.time()
    fp8_runs = [0] if args.no_fp8 or backends.fp8_capability_problem(
        device, cp.cuda.Device().compute_capability) else [0, 1]
    for fp8 in fp8_runs:
        name = "llmpy fp8" if fp8 else "llmpy"
        ms, memory, losses = bench_llmpy(cfg, params, DataLoader(args.data, args.B, args.T, vocab_size=cfg.vocab_size),
                                         args, fp8=fp8)
        rows.append((name, ms, memory, losses))
        cp.get_default_memory_pool().free_all_blocks()      # the model is gone: room for the next
        print(f"{name} done in {time.time() - t0:.0f} s", flush=True)
    if not args.no_torch:
        ms, memory, losses = bench_torch(cfg, params, DataLoader(args.data, args.B, args.T, vocab_size=cfg.vocab_size), args)
        rows.append(("pytorch", ms, memory, losses))

    print(f"\n{args.model}, B={args.B}, T={args.T}, {device}, median of {args.steps} steps after {args.warmup}")
    if len(rows) > 1:       # same weights, same batches, same lr: the loss curves should agree
        print("\nstep | " + " | ".join(f"{name} loss" for name, *_ in rows))
        for i in range(0, len(rows[0][3]), args.curve_every):
            print(f"{i + 1:4d} | " + " | ".join(f"{losses[i]:{len(name) + 5}.4f}" for name, _, _, losses in rows))
    print(f"\n{args.model}, B={args.B}, T={args.T}, {device}, median of {args.steps} steps after {args.warmup}")
    print(f"{'system':9s} | {'ms/step':>8s} | {'tokens/s':>10s} | {'MFU':>6s} | {'peak GiB':>8s} | last loss")
    for name, ms, memory, losses in rows:
        fraction = mfu(cfg, args.T, tokens, ms / 1000, device)
        mfu_text = "n/a" if fraction is None else f"{100 * fraction:.1f}%"
        print(f"{name:9s} | {ms:8.2f} | {tokens / ms * 1000:10.0f} | {mfu_text:>6s} | "
              f"{memory / 2**30:8.2f} | {losses[-1]:.4f}")
    times = {name: ms for name, ms, _, _ in rows}
    if "llmpy fp8" in times:
        fraction = mfu(cfg, args.T, tokens, times["llmpy fp8"] / 1000, device)
        if fraction is not None:
            print(f"llmpy fp8 MFU against the FP8 peak (2x bf16's): {50 * fraction:.1f}%")
        print(f"llmpy fp8 / bf16 throughput: {times['llmpy'] / times['llmpy fp8']:.3f}x")
    if "pytorch" in times:
        for name in ("llmpy", "llmpy fp8"):
            if name in times:
                print(f"{name} / pytorch throughput: {times['pytorch'] / times[name]:.3f}x")
    if (args.model, args.B, args.T) == ("d12", 64, 1024):
        print(LLM_C_FIGURES)


if __name__ == "__main__":
    main()
