"""A model of data-parallel scaling past one node: tokens/s of N nodes of 8 GPUs each, from the
step times measured on one H200 and the bytes of each gradient bucket, with the reduction after
the backward (one call) or overlapped with it (buckets, llmpy/buckets.py).

    python dev/scaling_model.py                    # the README's table
    python dev/scaling_model.py --model d48 --nodes 1 2 4 --gbps 100 400 --bucket_mb 50

What it assumes (the multi-GPU round checks it against measured points):
- Compute per GPU is the measured one-GPU step (MEASURED below), whatever the number of GPUs.
  The backward of one layer takes the d12 CUPTI trace's per-layer backward time (dev/cuda/
  README.md), scaled to the model's layer by FLOPs per token; the rest of the step (forward,
  classifier, LM head) runs before the layers' backward, the update (AdamW) after the last bucket.
- One node: the step's extra cost with several GPUs measured on the largest node at hand (4
  H200s over NVLink, README "Several GPUs"), grown to 8 GPUs by the ring's bytes factor
  2(n-1)/n. It is paid on every multi-GPU step, with overlap or without (not hidden: the
  overlap's gain inside a node is for the multi-GPU round to measure).
- Between nodes: a ring all-reduce over all n = 8N GPUs, as fast as its slowest link, the
  network at the given bandwidth per GPU (one NIC per GPU): 2(n-1)/n * bytes / bandwidth, plus
  a latency per call of `launch` + 2(N-1) network hops. ZeRO-1 reduce-scatters the gradients
  ((n-1)/n * bytes) and all-gathers the bf16 weights after the update (the same again, exposed:
  llmpy does not overlap it with the next forward).
- Overlap: each bucket's reduction starts when the backward has finished its layers and runs
  after the previous bucket's (one stream); the update waits for the last bucket, wte and wpe,
  which only the encoder's backward finishes. Gradients are bf16: 2 bytes a parameter.
"""
import argparse

from llmpy import buckets
from llmpy.config import from_descriptor, num_parameters

T = 1024
GPUS_PER_NODE = 8

# d12's backward of one layer at B = 64: the CUPTI trace's backward kernels (dev/cuda/README.md,
# "Where one step's time goes") less the LM head's two products (its dinp 6.0 ms, dweight 6.06),
# over 12 layers: (16.46 + 13.40 + 10.87 + 0.53 + 7.79 + 6.06 + 4.30 + 3.19 + 2.88 + 1.47 + 0.67
# - 6.0 - 6.06) / 12 ms, for 65,536 tokens
D12_LAYER_BACKWARD_MS_PER_TOKEN = (67.62 - 12.06) / 12 / 65536
D12_UPDATE_MS = 0.90        # the trace's adamw_update; a larger model's in proportion to its size

# measured on one H200 (README: "Speed", "Larger models") and on 4 H200s of one host (README:
# "Several GPUs"): the 4-GPU runs' extra time a step over a quarter of the 1-GPU run at the same
# total batch is what several GPUs cost inside a node
MEASURED = {
    "d12": dict(B=64, step_ms=108.52, node_gpus=4, node_extra_ms=268 - 1044 / 4),
    "d48": dict(B=32, step_ms=629.7, node_gpus=4, node_extra_ms=202 - 708 / 4),
}


def layer_flops_per_token(cfg):
    """Forward FLOPs of one layer per token: the four products (12 C^2 weights, 2 FLOPs each)
    and causal attention (QK^T and AV, half the T x T matrix)."""
    C = cfg.channels
    return 24 * C * C + 2 * T * C


def ring_factor(n):
    return 2 * (n - 1) / n


class Setup:
    """One model on N nodes at a network bandwidth per GPU."""

    def __init__(self, model, nodes, gbps, bucket_mb=25.0, launch_us=20.0, hop_us=8.0):
        self.cfg = from_descriptor(model)
        m = MEASURED[model]
        self.B, self.step_ms, self.nodes = m["B"], m["step_ms"], nodes
        self.n = nodes * GPUS_PER_NODE
        self.node_ms = m["node_extra_ms"] * ring_factor(GPUS_PER_NODE) / ring_factor(m["node_gpus"])
        self.bytes_per_ms = gbps / 8 * 1e9 / 1e3          # Gb/s a GPU -> bytes a millisecond
        self.latency_ms = (launch_us + 2 * (nodes - 1) * hop_us) / 1e3 if nodes > 1 else 0.0
        L = self.cfg.num_layers
        scale = layer_flops_per_token(self.cfg) / layer_flops_per_token(from_descriptor("d12"))
        self.layer_ms = D12_LAYER_BACKWARD_MS_PER_TOKEN * scale * self.B * T
        size = num_parameters(self.cfg)
        self.update_ms = D12_UPDATE_MS * size / num_parameters(from_descriptor("d12"))
        self.before_layers_ms = self.step_ms - self.update_ms - L * self.layer_ms
        self.buckets = buckets.plan(self.cfg, size, 2, bucket_mb * 2**20)
        self.grad_bytes = 2 * size

    def network_ms(self, nbytes, factor):
        """One collective over the nodes' ring moving factor * nbytes per GPU."""
        if self.nodes == 1:
            return 0.0
        return factor * nbytes / self.bytes_per_ms + self.latency_ms

    def step(self, overlap, zero=0):
        """ms of one step on every GPU."""
        if not overlap:     # all-reduce, or reduce-scatter + all-gather: the same bytes
            calls = 2 if zero else 1
            comm = self.network_ms(self.grad_bytes, ring_factor(self.n)) + (calls - 1) * self.latency_ms
            return self.step_ms + self.node_ms + comm
        factor = ring_factor(self.n) / (2 if zero else 1)
        L = self.cfg.num_layers
        free = 0.0          # when the buckets' stream is done with the previous bucket
        for ready, ranges in self.buckets.items():
            done_layers = L if ready == buckets.EMBEDDINGS else L - ready
            t_ready = self.before_layers_ms + done_layers * self.layer_ms
            nbytes = 2 * sum(end - start for start, end in ranges)
            free = max(free, t_ready) + self.network_ms(nbytes, factor)
        gather = self.network_ms(self.grad_bytes, factor) if zero else 0.0
        return free + self.update_ms + self.node_ms + gather

    def tokens_per_s(self, overlap, zero=0):
        return self.n * self.B * T / (self.step(overlap, zero) / 1e3)

    def one_gpu_tokens_per_s(self):
        return self.B * T / (self.step_ms / 1e3)


def table(models, nodes, gbps, bucket_mb):
    print("| model | nodes x 8 | Gb/s per GPU | one call after the backward: tokens/s (scaling) "
          "| overlapped, -z 0 | overlapped, -z 1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model in models:
        for N in nodes:
            for bw in gbps:
                s = Setup(model, N, bw, bucket_mb)
                ideal = s.n * s.one_gpu_tokens_per_s()
                cells = []
                for overlap, zero in ((False, 0), (True, 0), (True, 1)):
                    rate = s.tokens_per_s(overlap, zero)
                    cells.append(f"{rate / 1e6:,.2f}M ({rate / ideal:.3f})")
                print(f"| {model} | {N} | {bw if N > 1 else 'NVLink'} | " + " | ".join(cells) + " |")
                if N == 1:
                    break       # one node: no network
    print()
    for model in models:
        s = Setup(model, 2, gbps[0], bucket_mb)
        print(f"{model}: B={s.B} per GPU, one GPU {s.step_ms} ms/step; a layer's backward "
              f"{s.layer_ms:.2f} ms; {s.grad_bytes / 1e6:,.0f} MB of bf16 gradients in {len(s.buckets)} "
              f"buckets of up to {bucket_mb:g} MiB (the last, wte and wpe, "
              f"{2 * sum(e - a for a, e in s.buckets[buckets.EMBEDDINGS]) / 1e6:,.0f} MB); "
              f"inside a node +{s.node_ms:.1f} ms/step")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["d12", "d48"], choices=sorted(MEASURED))
    p.add_argument("--nodes", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--gbps", nargs="+", type=float, default=[100, 200, 400], help="network Gb/s per GPU")
    p.add_argument("--bucket_mb", type=float, default=25.0)
    args = p.parse_args(argv)
    if min(args.nodes) < 1 or min(args.gbps) <= 0 or args.bucket_mb <= 0:
        p.error("--nodes, --gbps and --bucket_mb must be positive")
    table(args.model, args.nodes, [int(g) if g == int(g) else g for g in args.gbps], args.bucket_mb)


if __name__ == "__main__":
    main()
