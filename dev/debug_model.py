"""When a loss diverges: one batch through the model, eager (no CUDA graph), and the norm of every
layer's activations and parameter gradients; with --compare, the same batch from the same
weights on the CPU in fp32 and on the GPU in bf16, and where the two part.

    python -m dev.debug_model -e log124M/model_00005000.bin               # per-layer norms
    python -m dev.debug_model -e d12 -b 4 -t 256 --compare               # CPU fp32 against GPU bf16

(run from the repository's root; -e takes what train_gpt2.py's -e takes.) Activations are the
per-layer buffers the backward keeps (ln1, qkv, atty, residual2, ln2, fch, fch_gelu, residual3);
gradients are those of each layer's parameters. Norms are RMS over the tensor, in fp64 on the host.
"""
import argparse

import numpy as np

from llmpy import LlmpyError, backends, run_main
from llmpy.config import param_shapes
from llmpy.dataloader import DataLoader
from llmpy.gpt2 import GPT2, init_params
from llmpy.models import load_model_params
from train_gpt2 import DATA

ACTIVATIONS = ("ln1", "qkv", "atty", "residual2", "ln2", "fch", "fch_gelu", "residual3")


def rms(a):
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def layer_norms(cfg, params, device, B, T, inputs, targets):
    """{(kind, name): [rms of layer 0, ..., layer L-1]} and the loss, after one eager forward and
    backward of this batch on `device`."""
    ops = backends.load(device)
    model = GPT2(cfg, ops, B, T, params=params)
    model.zero_grad()
    model.forward(inputs, targets)
    model.backward()
    acts = model.acts(B, T)
    norms = {}
    for name in ACTIVATIONS:
        if name in model.recomputed:        # one slot, the last layer's: not every layer's
            continue
        layers = ops.to_host(acts[name])
        norms["act", name] = [rms(layers[l]) for l in range(cfg.num_layers)]
    for name, shape in param_shapes(cfg).items():
        if len(shape) > 1 and shape[0] == cfg.num_layers:
            grads = ops.to_host(model.grads[name])
            norms["grad", name] = [rms(grads[l]) for l in range(cfg.num_layers)]
    return norms, model.mean_loss()


def print_table(title, norms, fmt):
    """One table of activations, one of gradients: a row per layer, a column per tensor."""
    for kind, what in (("act", "activations"), ("grad", "parameter gradients")):
        names = [key for key in norms if key[0] == kind]
        print(f"{title}: {what}")
        print("layer | " + " | ".join(f"{name:>9s}" for _, name in names))
        for l in range(len(norms[names[0]])):
            print(f"{l:5d} | " + " | ".join(f"{fmt(norms[key][l]):>9s}" for key in names))


def main(argv=None):
    p = argparse.ArgumentParser(description="per-layer activation and gradient norms of one batch; "
                                "--compare: CPU fp32 against GPU bf16, and where they part")
    p.add_argument("-e", dest="model", default="d12", help="as train_gpt2.py's -e")
    p.add_argument("-i", dest="data", default=f"{DATA}/shakespeare_val.bin", help="token shards (glob)")
    p.add_argument("-b", dest="B", type=int, default=4)
    p.add_argument("-t", dest="T", type=int, default=256)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--compare", action="store_true", help="the batch on the CPU (fp32) and on the GPU (bf16)")
    p.add_argument("--tolerance", type=float, default=2e-2,
                   help="with --compare: the relative difference at which they part (bf16's ~1e-2)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    cfg, params = load_model_params(args.model)
    if params is None:
        params = init_params(cfg, args.seed)
    if args.T > cfg.max_seq_len:
        raise LlmpyError(f"-t {args.T} is larger than the model's max sequence length {cfg.max_seq_len}")
    inputs, targets = DataLoader(args.data, args.B, args.T, 0, 1, vocab_size=cfg.vocab_size).next_batch()
    if not args.compare:
        norms, loss = layer_norms(cfg, params, args.device, args.B, args.T, inputs, targets)
        print(f"loss {loss:.6f}")
        print_table("RMS per layer", norms, lambda x: f"{x:.3e}")
        return
    ref, ref_loss = layer_norms(cfg, params, "cpu", args.B, args.T, inputs, targets)
    gpu, gpu_loss = layer_norms(cfg, params, "cuda", args.B, args.T, inputs, targets)
    rel = {key: [abs(g - r) / max(r, 1e-30) for g, r in zip(gpu[key], ref[key])] for key in ref}
    print(f"loss: CPU fp32 {ref_loss:.6f}, GPU bf16 {gpu_loss:.6f}")
    print_table("relative difference of the RMS, GPU bf16 against CPU fp32", rel, lambda x: f"{x:.1e}")
    # the forward parts first where an activation does (in layer order), the backward where a
    # gradient does (from the last layer down, the order the backward runs)
    for kind, layers in (("act", range(cfg.num_layers)), ("grad", reversed(range(cfg.num_layers)))):
        parted = [(l, name) for l in layers for (k, name) in rel if k == kind and rel[k, name][l] > args.tolerance]
        what = "activations" if kind == "act" else "gradients"
        if parted:
            l, name = parted[0]
            print(f"{what} part first at layer {l}'s {name}: relative difference {rel[kind, name][l]:.2e} "
                  f"> {args.tolerance:g}")
        else:
            print(f"{what}: within {args.tolerance:g} at every layer")


if __name__ == "__main__":
    run_main(main)
