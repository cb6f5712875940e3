"""Train GPT-2 the llm.c way: hand-written forward and backward, one flat parameter buffer.

    python train_gpt2.py -e d6 -b 8 -t 256 -x 200             # a fresh d6 on Shakespeare
    python train_gpt2.py -e model.bin -x 1                      # one step from an llm.c model file
    python train_gpt2.py -e d12 -o log124M -n 500 -y 1          # checkpoints, resumable

Flags are llm.c's (train_gpt2.cu) where they apply; run with --help for the list.
"""
import argparse
import os
import sys
import time

import numpy as np

from llmpy import LlmpyError, backends
from llmpy.checkpoint import (checkpoint_paths, latest_checkpoint_step, read_model, read_state,
                              write_done_marker, write_model, write_state)
from llmpy.config import DESCRIPTORS, from_descriptor
from llmpy.dataloader import DataLoader
from llmpy.gpt2 import GPT2, init_params
from llmpy.logger import Logger
from llmpy.mfu import mfu
from llmpy.sampler import generate
from llmpy.schedulers import SCHEDULES, learning_rate
from llmpy.tokenizer import EOT, get_tokenizer

DATA = "dev/data/shakespeare"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.exit(f"{self.prog}: error: {message} (see --help)")


def parse_args(argv):
    p = Parser(prog="train_gpt2.py", add_help=False, allow_abbrev=False,
               description="Train GPT-2 with llmpy (llm.c's flags).")
    p.add_argument("--help", action="help", help="show this help and exit")
    arg = p.add_argument
    arg("-i", dest="train_data", default=f"{DATA}/shakespeare_train.bin", help="train token shards (glob)")
    arg("-j", dest="val_data", default=f"{DATA}/shakespeare_val.bin", help="val token shards (glob)")
    arg("-e", dest="model", default="d12", help="llm.c model file, or a descriptor for a fresh model: "
        + ", ".join(DESCRIPTORS))
    arg("-o", dest="out_dir", default=None, help="output folder: main.log and checkpoints")
    arg("-b", dest="B", type=int, default=4, help="micro-batch size (sequences per step per process)")
    arg("-t", dest="T", type=int, default=1024, help="sequence length")
    arg("-d", dest="total_batch", type=int, default=-1,
        help="total batch in tokens; gradients accumulate to reach it (-1: B*T)")
    arg("-x", dest="max_steps", type=int, default=-1, help="steps to train (-1: one epoch of the train data)")
    arg("-l", dest="lr", type=float, default=3e-4, help="peak learning rate")
    arg("-u", dest="warmup", type=int, default=0, help="learning-rate warmup steps")
    arg("-q", dest="final_lr_frac", type=float, default=1.0, help="final learning rate as a fraction of -l")
    arg("-k", dest="schedule", default="cosine", choices=SCHEDULES, help="learning-rate schedule")
    arg("-c", dest="weight_decay", type=float, default=0.0, help="AdamW weight decay (2-D weights only)")
    arg("-v", dest="val_every", type=int, default=20, help="val loss every N steps (0: never)")
    arg("-m", dest="val_batches", type=int, default=20, help="val batches per evaluation (-1: all)")
    arg("-s", dest="sample_every", type=int, default=20, help="sample every N steps (0: never)")
    arg("-g", dest="gen_tokens", type=int, default=64, help="tokens to sample")
    arg("-a", dest="overfit", type=int, default=0, choices=(0, 1), help="1: overfit a single batch")
    arg("-n", dest="checkpoint_every", type=int, default=0, help="write a checkpoint every N steps (needs -o)")
    arg("-y", dest="resume", type=int, default=0, choices=(0, 1), help="1: resume from the newest checkpoint in -o")
    arg("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    arg("--seed", type=int, default=42, help="seed for a fresh model's weights and for sampling")
    return p.parse_args(argv)


def load_model_params(spec):
    """-e: a descriptor builds llm.c's fresh initialisation, anything else is a model file."""
    if spec in DESCRIPTORS:
        return from_descriptor(spec), None
    if not os.path.isfile(spec):
        raise LlmpyError(f"-e {spec}: no such model file, and not a model descriptor ({', '.join(DESCRIPTORS)})")
    return read_model(spec)


def check_sizes(args, cfg, world=1):
    if args.B < 1 or args.T < 1:
        raise LlmpyError(f"-b {args.B} -t {args.T}: batch size and sequence length must be positive")
    if args.T > cfg.max_seq_len:
        raise LlmpyError(f"-t {args.T} is larger than the model's max sequence length {cfg.max_seq_len}")
    micro = args.B * args.T * world
    total = args.total_batch if args.total_batch > 0 else micro
    if total % micro:
        raise LlmpyError(f"-d {total} is not a multiple of B*T*processes = {args.B}*{args.T}*{world} = {micro}")
    if (args.checkpoint_every > 0 or args.resume) and not args.out_dir:
        raise LlmpyError("-n and -y need an output folder -o")
    return total, total // micro


def save_checkpoint(out_dir, step, model, loader, rng):
    model_path, state_path = checkpoint_paths(out_dir, step, rank=0)
    write_model(model_path, model.cfg, model.params_fp32())
    master = None if model.master is None else model.ops.to_host(model.master)
    write_state(state_path, step=step, m=model.ops.to_host(model.m_flat),
                v=model.ops.to_host(model.v_flat), master=master,
                rng_state=rng.bit_generator.state, loader_state=loader.state(),
                extra={"B": model.B, "T": model.T})
    write_done_marker(out_dir, step)
    print(f"checkpoint written: {model_path}")


def resume_checkpoint(out_dir, model, loader, rng):
    step = latest_checkpoint_step(out_dir)
    if step is None:
        raise LlmpyError(f"-y 1: no complete checkpoint (DONE_<step> marker) in {out_dir}")
    _, state_path = checkpoint_paths(out_dir, step, rank=0)
    state = read_state(state_path)
    if state["extra"] != {"B": model.B, "T": model.T}:
        raise LlmpyError(f"-y 1: {state_path} was written with {state['extra']}, this run has B={model.B} T={model.T}")
    model.m_flat[...] = model.ops.to_device(state["m"])
    model.v_flat[...] = model.ops.to_device(state["v"])
    if model.master is not None:
        model.master[...] = model.ops.to_device(state["master"])
    model.step = state["step"]
    loader.load_state(state["loader_state"])
    rng.bit_generator.state = state["rng_state"]
    print(f"resumed from step {step} of {out_dir}")
    return step


def evaluate(model, loader, num_batches):
    loader.reset()
    total = 0.0
    for _ in range(num_batches):
        inputs, targets = loader.next_batch()
        model.forward(inputs, targets)
        total += model.mean_loss()
    return total / num_batches


def mfu_column(cfg, T, tokens, seconds, ops):
    """llm.c's "| 45.1% bf16 MFU" on a GPU (n/a where its peak is unknown); nothing on the CPU."""
    if ops.name == "cpu":
        return ""
    fraction = mfu(cfg, T, tokens, seconds, ops.device_name())
    return " | n/a MFU" if fraction is None else f" | {100 * fraction:.1f}% bf16 MFU"


def main(argv=None):
    args = parse_args(argv)
    ops = backends.load(args.device)
    cfg, params = load_model_params(args.model)
    if args.resume:   # the checkpoint's weights replace -e's
        step = latest_checkpoint_step(args.out_dir) if args.out_dir else None
        if step is not None:
            cfg, params = read_model(checkpoint_paths(args.out_dir, step, rank=0)[0])
    total_batch, grad_accum = check_sizes(args, cfg)
    if params is None:
        params = init_params(cfg, args.seed)
    model = GPT2(cfg, ops, args.B, args.T, params=params)
    train_loader = DataLoader(args.train_data, args.B, args.T)
    val_loader = DataLoader(args.val_data, args.B, args.T) if args.val_every > 0 else None
    val_batches = 0
    if val_loader:
        available = val_loader.num_tokens // (args.B * args.T)
        val_batches = available if args.val_batches < 0 else min(args.val_batches, available)
    num_steps = args.max_steps if args.max_steps > 0 else train_loader.num_tokens // total_batch
    tokenizer = get_tokenizer() if args.sample_every > 0 else None
    rng = np.random.default_rng(args.seed)
    start = resume_checkpoint(args.out_dir, model, train_loader, rng) if args.resume else 0
    logger = Logger(args.out_dir, resume=bool(args.resume))

    print(f"model: L={cfg.num_layers} C={cfg.channels} NH={cfg.num_heads} maxT={cfg.max_seq_len} "
          f"V={cfg.vocab_size} Vp={cfg.padded_vocab_size} | {params.size:,} parameters | "
          f"device {ops.device_name()}")
    print("memory: " + " | ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in model.memory_report().items()))
    print(f"batch: B={args.B} T={args.T} | total {total_batch:,} tokens = {grad_accum} micro-steps | "
          f"train {train_loader.num_tokens:,} tokens | {num_steps} steps | val {val_batches} batches")

    for step in range(start, num_steps + 1):
        last = step == num_steps
        if val_loader and (step % args.val_every == 0 or last):
            val_loss = evaluate(model, val_loader, val_batches)
            print(f"val loss {val_loss:.6f}")
            logger.val(step, val_loss)
        if tokenizer and ((step > 0 and step % args.sample_every == 0) or last):
            tokens = generate(model, [EOT], args.gen_tokens, rng)
            print(f"generating:\n---\n{tokenizer.decode(tokens[1:])}\n---")
        if args.checkpoint_every > 0 and step > start and (step % args.checkpoint_every == 0 or last):
            save_checkpoint(args.out_dir, step, model, train_loader, rng)
        if last:
            break

        t0 = time.perf_counter()
        if args.overfit:
            train_loader.reset()
        model.zero_grad()
        train_loss = 0.0
        for _ in range(grad_accum):
            inputs, targets = train_loader.next_batch()
            model.forward(inputs, targets, loss_scale=1.0 / grad_accum)
            model.backward()
            train_loss += model.mean_loss() / grad_accum
        lr = learning_rate(args.schedule, step, args.lr, args.warmup, num_steps, args.final_lr_frac)
        norm = model.update(lr, weight_decay=args.weight_decay)
        ops.synchronize()
        dt = time.perf_counter() - t0
        print(f"step {step + 1:4d}/{num_steps} | loss {train_loss:.6f} | norm {norm:.4f} | lr {lr:.2e} "
              f"| {dt * 1000:.2f} ms{mfu_column(cfg, args.T, total_batch, dt, ops)} | "
              f"{total_batch / dt:.0f} tok/s", flush=True)
        logger.train(step + 1, train_loss, lr, norm)
        if step == start and ops.memory_in_use() is not None:
            print(f"GPU memory in use after the first step: {ops.memory_in_use() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    try:
        main()
    except LlmpyError as e:
        sys.exit(f"error: {e}")
