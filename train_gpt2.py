"""Train GPT-2 the llm.c way: hand-written forward and backward, one flat parameter buffer.

    python train_gpt2.py -e d6 -b 8 -t 256 -x 200             # a fresh d6 on Shakespeare
    python train_gpt2.py -e model.bin -x 1                      # one step from an llm.c model file
    python train_gpt2.py -e d12 -o log124M -n 500 -y 1          # checkpoints, resumable

Flags are llm.c's (train_gpt2.cu) where they apply; run with --help for the list.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

from llmpy import LlmpyError, backends, distributed, hellaswag, run_main
from llmpy.autofit import AUTO_START_B, advice, auto_start_B, fit, is_out_of_memory, release_memory
from llmpy.checkpoint import (checkpoint_paths, checkpoints_to_delete, complete_checkpoint_steps,
                              delete_checkpoint, latest_checkpoint_step, read_model, read_state,
                              write_done_marker, write_model, write_state)
from llmpy.config import DESCRIPTORS, from_descriptor, num_parameters
from llmpy.dataloader import DataLoader
from llmpy.gpt2 import GPT2, init_params
from llmpy.hf import HF_MODELS, load_hf_gpt2
from llmpy.logger import Logger, format_eta
from llmpy.mfu import mfu
from llmpy.outlier import OutlierDetector
from llmpy.sampler import generate, prompt_tokens
from llmpy.schedulers import SCHEDULES, learning_rate
from llmpy.tokenizer import get_tokenizer

DATA = "dev/data/shakespeare"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.exit(f"{self.prog}: error: {message} (see --help)")


def batch_size(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: an integer or auto") from None


def parse_args(argv):
    p = Parser(prog="train_gpt2.py", add_help=False, allow_abbrev=False,
               description="Train GPT-2 with llmpy (llm.c's flags).")
    p.add_argument("--help", action="help", help="show this help and exit")
    arg = p.add_argument
    # files
    arg("-i", dest="train_data", default=f"{DATA}/shakespeare_train.bin", help="train token shards (glob)")
    arg("-j", dest="val_data", default=f"{DATA}/shakespeare_val.bin", help="val token shards (glob)")
    arg("-e", dest="model", default="d12", help="llm.c model file, a descriptor for a fresh model ("
        + ", ".join(DESCRIPTORS) + "), OpenAI's GPT-2 from the Hugging Face cache (" + ", ".join(HF_MODELS)
        + "), or a Hugging Face GPT-2 folder")
    arg("--hf_dir", default=None, help="with -e gpt2*: folder with its config.json and model.safetensors "
        "(default: the Hugging Face cache)")
    arg("-o", dest="out_dir", default=None, help="output folder: main.log and checkpoints")
    # checkpoints
    arg("-n", dest="checkpoint_every", type=int, default=0, help="write a checkpoint every N steps (needs -o)")
    arg("-nk", dest="checkpoints_keep", type=int, default=0,
        help="keep only the newest K checkpoints, deleting older ones (0: keep all)")
    arg("-nm", dest="major_every", type=int, default=0,
        help="checkpoints at multiples of M steps are major: -nk never deletes them (0: none)")
    arg("-y", dest="resume", type=int, default=0, choices=(0, 1),
        help="1: resume from the newest complete checkpoint in -o (start fresh if there is none)")
    # batch
    arg("-b", dest="B", type=batch_size, default=4,
        help="micro-batch size (sequences per step per process), or auto: the largest that fits")
    arg("-t", dest="T", type=int, default=1024, help="sequence length")
    arg("-d", dest="total_batch", type=int, default=-1,
        help="total batch in tokens; gradients accumulate to reach it (-1: B*T)")
    arg("-x", dest="max_steps", type=int, default=-1, help="steps to train (-1: one epoch of the train data)")
    # optimization
    arg("-k", dest="schedule", default="cosine", choices=SCHEDULES, help="learning-rate schedule")
    arg("-l", dest="lr", type=float, default=3e-4, help="peak learning rate")
    arg("-u", dest="warmup", type=int, default=0, help="learning-rate warmup steps")
    arg("-q", dest="final_lr_frac", type=float, default=1.0, help="final learning rate as a fraction of -l")
    arg("-c", dest="weight_decay", type=float, default=0.0, help="AdamW weight decay (2-D weights only)")
    arg("-sl", dest="skip_lossz", type=float, default=0.0,
        help="skip the update when the loss's z-score over the last 64 steps exceeds this (0: off)")
    arg("-sg", dest="skip_gradz", type=float, default=0.0,
        help="skip the update when the grad norm's z-score over the last 64 steps exceeds this (0: off)")
    arg("-r", dest="recompute", type=int, default=0, choices=(0, 1, 2),
        help="recompute in the backward to save memory: 0 none, 1 GELU, 2 GELU and LayerNorm")
    arg("-z", dest="zero", type=int, default=0, choices=(0, 1),
        help="ZeRO stage with several processes: 1 shards AdamW state and master weights")
    arg("--overlap", type=int, default=1, choices=(0, 1),
        help="with several processes: 1 reduces the gradients in buckets while the backward runs, "
        "0 in one call after it")
    arg("--bucket_mb", type=float, default=25.0,
        help="with --overlap 1: the largest bucket of gradients, in MiB (a layer larger than this is one bucket)")
    # evaluation
    arg("-v", dest="val_every", type=int, default=20, help="val loss (and -h 1 HellaSwag) every N steps (0: never)")
    arg("-m", dest="val_batches", type=int, default=20, help="val batches per evaluation (-1: all)")
    arg("-h", dest="hellaswag", type=int, default=0, choices=(0, 1), help="1: HellaSwag accuracy every -v steps")
    arg("--hellaswag", dest="hellaswag_file", default=hellaswag.DEFAULT_PATH,
        help="HellaSwag eval file (made by dev/data/hellaswag.py)")
    arg("-s", dest="sample_every", type=int, default=20, help="sample every N steps (0: never)")
    arg("-g", dest="gen_tokens", type=int, default=64, help="tokens to sample")
    arg("--prompt", default=None, help="sample continuations of this text (default: from <|endoftext|>)")
    arg("--temperature", type=float, default=1.0, help="sampling temperature")
    arg("--top_k", type=int, default=0, help="sample from the K most likely tokens only (0: all)")
    # debugging, device
    arg("-a", dest="overfit", type=int, default=0, choices=(0, 1), help="1: overfit a single batch")
    arg("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    arg("--seed", type=int, default=42, help="seed for a fresh model's weights and for sampling")
    return p.parse_args(argv)


def check_args(args):
    """Values argparse cannot check by itself: one line naming the flag."""
    rules = [
        (args.B == "auto" or args.B >= 1, f"-b {args.B}: the micro-batch must be positive, or auto"),
        (args.T >= 1, f"-t {args.T}: the sequence length must be positive"),
        (args.total_batch == -1 or args.total_batch >= 1, f"-d {args.total_batch}: must be positive, or -1"),
        (args.max_steps == -1 or args.max_steps >= 1, f"-x {args.max_steps}: must be positive, or -1 for one epoch"),
        (args.lr >= 0, f"-l {args.lr}: the learning rate cannot be negative"),
        (args.warmup >= 0, f"-u {args.warmup}: warmup steps cannot be negative"),
        (args.final_lr_frac >= 0, f"-q {args.final_lr_frac}: the final lr fraction cannot be negative"),
        (args.weight_decay >= 0, f"-c {args.weight_decay}: weight decay cannot be negative"),
        (args.skip_lossz >= 0, f"-sl {args.skip_lossz}: a z-score threshold is positive (0: off)"),
        (args.skip_gradz >= 0, f"-sg {args.skip_gradz}: a z-score threshold is positive (0: off)"),
        (args.checkpoint_every >= 0, f"-n {args.checkpoint_every}: cannot be negative"),
        (args.checkpoints_keep >= 0, f"-nk {args.checkpoints_keep}: cannot be negative"),
        (args.major_every >= 0, f"-nm {args.major_every}: cannot be negative"),
        (args.val_every >= 0, f"-v {args.val_every}: cannot be negative (0: never)"),
        (args.val_batches == -1 or args.val_batches >= 1, f"-m {args.val_batches}: must be positive, or -1 for all"),
        (args.sample_every >= 0, f"-s {args.sample_every}: cannot be negative (0: never)"),
        (args.gen_tokens >= 1, f"-g {args.gen_tokens}: must sample at least one token"),
        (args.temperature > 0, f"--temperature {args.temperature}: must be positive"),
        (args.top_k >= 0, f"--top_k {args.top_k}: cannot be negative (0: all tokens)"),
        (args.bucket_mb > 0, f"--bucket_mb {args.bucket_mb}: a bucket must hold some gradients (MiB > 0)"),
        (args.prompt is None or args.sample_every > 0, "--prompt needs sampling: -s must be positive"),
        (args.checkpoint_every == 0 and not args.resume or args.out_dir, "-n and -y need an output folder -o"),
    ]
    for ok, message in rules:
        if not ok:
            raise LlmpyError(message)


def load_model_params(spec, hf_dir=None):
    """-e: a descriptor builds llm.c's fresh initialisation; an OpenAI name or a folder is a
    Hugging Face GPT-2; anything else is an llm.c model file."""
    if hf_dir is not None and spec not in HF_MODELS:
        raise LlmpyError(f"--hf_dir goes with -e {'|'.join(HF_MODELS)}, not -e {spec}")
    if spec in DESCRIPTORS:
        return from_descriptor(spec), None
    if spec in HF_MODELS or os.path.isdir(spec):
        return load_hf_gpt2(spec, hf_dir)
    if not os.path.isfile(spec):
        raise LlmpyError(f"-e {spec}: no such model file, and not a model descriptor ({', '.join(DESCRIPTORS)}) "
                         f"or Hugging Face GPT-2 ({', '.join(HF_MODELS)})")
    return read_model(spec)


def batch_sizes(args, cfg, world=1, resume_B=None):
    """(first micro-batch B to try, total batch in tokens). With -b auto, the total batch is -d,
    or AUTO_START_B sequences per process without it; B starts at the checkpoint's when resuming."""
    if args.T > cfg.max_seq_len:
        raise LlmpyError(f"-t {args.T} is larger than the model's max sequence length {cfg.max_seq_len}")
    if args.B == "auto":
        rows_unit = args.T * world
        if args.total_batch > 0 and args.total_batch % rows_unit:
            raise LlmpyError(f"-d {args.total_batch} is not a multiple of T*processes = {args.T}*{world} = {rows_unit}")
        rows = args.total_batch // rows_unit if args.total_batch > 0 else AUTO_START_B
        B = resume_B if resume_B and rows % resume_B == 0 else auto_start_B(rows)
        return B, rows * rows_unit
    micro = args.B * args.T * world
    total = args.total_batch if args.total_batch > 0 else micro
    if total % micro:
        raise LlmpyError(f"-d {total} is not a multiple of B*T*processes = {args.B}*{args.T}*{world} = {micro}")
    return args.B, total


def build_model(args, cfg, ops, params, B, comm):
    """The model at micro-batch B; with -b auto, the largest that fits (see llmpy/autofit.py).
    Returns (model, B, recompute)."""
    def build(b, recompute):
        model = GPT2(cfg, ops, b, args.T, params=params, recompute=recompute, comm=comm,
                     zero=args.zero, bucket_bytes=args.bucket_mb * 2**20 if args.overlap else None)
        if args.B == "auto":      # one forward/backward at full size finds what the first step needs
            zeros = np.zeros((b, args.T), dtype=np.int32)
            model.forward(zeros, zeros)
            model.backward()
            model.grad_norm()
            model.zero_grad()
            ops.synchronize()
        return model
    if args.B != "auto":
        return build(B, args.recompute), B, args.recompute
    model, B, recompute = fit(build, B, args.recompute, release=lambda: release_memory(ops))
    comm.say(f"-b auto: chose B={B} -r {recompute}")
    return model, B, recompute


# --------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(out_dir, step, model, loader, rng, extra):
    """llm.c's checkpoint: the model file (the weights as the model holds them: bf16 on a GPU,
    fp32 master weights, AdamW m, v and the rest in the state file, one per process: its shard
    with ZeRO-1), then, once every process has written, DONE_<step>."""
    comm = model.comm
    model_path, state_path = checkpoint_paths(out_dir, step, rank=comm.rank)
    if comm.rank == 0:
        # the weights exactly as the model holds them, fp32 on the CPU and bf16 on a GPU (the
        # fp32 master weights go into the state); with ZeRO-1 the flat buffer is padded
        weights = model.ops.to_host(model.params_flat[:num_parameters(model.cfg)]).astype(np.float32)
        write_model(model_path, model.cfg, weights, dtype="fp32" if model.master is None else "bf16")
    master = None if model.master is None else model.ops.to_host(model.master)
    write_state(state_path, step=step, m=model.ops.to_host(model.m_flat),
                v=model.ops.to_host(model.v_flat), master=master,
                rng_state=rng.bit_generator.state, loader_state=loader.state(), extra=extra)
    comm.barrier()
    if comm.rank == 0:
        write_done_marker(out_dir, step)
    comm.say(f"checkpoint written: {model_path}")


def prune_checkpoints(out_dir, keep, major_every):
    for step in checkpoints_to_delete(complete_checkpoint_steps(out_dir), keep, major_every):
        delete_checkpoint(out_dir, step)
        print(f"checkpoint deleted: step {step} (-nk {keep}{f' -nm {major_every}' if major_every else ''})")


def resume_checkpoint(state, model, loader, rng, detectors):
    """Load a state file's optimizer, data, RNG and outlier-detector state into this run."""
    extra = state["extra"]
    world = model.comm.world
    if extra.get("world", 1) != world or extra.get("zero", 0) != model.zero:
        raise LlmpyError(f"-y 1: the checkpoint was written by {extra.get('world', 1)} process(es) with "
                         f"-z {extra.get('zero', 0)}; resume it with as many and the same -z "
                         f"(this run: {world}, -z {model.zero})")
    if extra.get("T") != model.T:
        raise LlmpyError(f"-y 1: the checkpoint was written with T={extra.get('T')}, this run has -t {model.T}")
    if extra.get("B") != model.B:
        model.comm.say(f"resuming with B={model.B} where the checkpoint had B={extra.get('B')}: "
              "the same data, losses equal within float rounding")
    if state["m"].size != model.m_flat.size:
        raise LlmpyError(f"-y 1: the checkpoint's AdamW state has {state['m'].size:,} values, this run's "
                         f"{model.m_flat.size:,} (another model, or another number of processes with ZeRO-1)")
    ops = model.ops
    model.m_flat[...] = ops.to_device(state["m"])
    model.v_flat[...] = ops.to_device(state["v"])
    if model.master is not None and state["master"] is not None:
        model.master[...] = ops.to_device(state["master"])
    elif model.master is None and state["master"] is not None:   # a GPU run resumed on the CPU
        if state["master"].size != model.params_flat.size:
            raise LlmpyError("-y 1: the checkpoint's master weights are sharded (ZeRO-1); resume it with as many processes")
        model.params_flat[...] = ops.to_device(state["master"])
    model.step = state["step"]
    loader.load_state(state["loader_state"])
    rng.bit_generator.state = state["rng_state"]
    for name, detector in detectors.items():
        if name in extra.get("outlier", {}):
            detector.load_state(extra["outlier"][name])


# --------------------------------------------------------------------------------------------
# evaluation

def evaluate(model, loader, num_batches):
    """Mean loss over num_batches of the loader (each process its share of every batch)."""
    loader.reset()
    total = 0.0
    for _ in range(num_batches):
        inputs, targets = loader.next_batch()
        model.forward(inputs, targets)
        total += model.mean_loss()
    return model.comm.sum(total) / (num_batches * model.comm.world)


def load_hellaswag(path, T, vocab_size):
    if not os.path.isfile(path):
        raise LlmpyError(f"-h 1: no HellaSwag eval file {path}; make it with `python dev/data/hellaswag.py` "
                         "or name one with --hellaswag")
    examples = hellaswag.read_evalfile(path)
    hellaswag.check_fits(examples, T, vocab_size, path)
    return examples


def mfu_column(cfg, T, tokens, seconds, ops):
    """llm.c's "| 45.1% bf16 MFU" of one GPU, from the tokens it processed (n/a where its peak
    is unknown); nothing on the CPU."""
    if ops.name == "cpu":
        return ""
    fraction = mfu(cfg, T, tokens, seconds, ops.device_name())
    return " | n/a MFU" if fraction is None else f" | {100 * fraction:.1f}% bf16 MFU"


# --------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    ops = backends.load(args.device)
    comm = distributed.init(ops)
    if args.B == "auto" and comm.world > 1:
        raise LlmpyError(f"-b auto runs in a single process; with {comm.world}, give -b")
    try:
        train(args, ops, comm)
    except Exception as e:      # noqa: BLE001 -- out-of-memory and CUDA faults become one line
        if isinstance(e, LlmpyError):
            raise
        if is_out_of_memory(e):
            total = args.total_batch if args.total_batch > 0 or args.B == "auto" else args.B * args.T
            raise LlmpyError(advice(ops.device_name(), args.B, args.T, args.recompute, total, e)) from None
        if isinstance(e, ops.device_errors):
            raise LlmpyError(f"CUDA error: {e} (LLMPY_SYNC=1 synchronises after every kernel, "
                             "to name the one at fault)") from None
        raise


def train(args, ops, comm):
    say = comm.say
    # where to start: -y 1 takes the newest complete checkpoint, if there is one
    resume_step = latest_checkpoint_step(args.out_dir) if args.resume else None
    state = None
    if args.resume and resume_step is None:
        say(f"-y 1: no complete checkpoint in {args.out_dir}: starting from scratch")
    if resume_step is not None:
        model_path, state_path = checkpoint_paths(args.out_dir, resume_step, rank=comm.rank)
        cfg, params = read_model(model_path)        # the checkpoint's weights replace -e's
        state = read_state(state_path)
    else:
        cfg, params = load_model_params(args.model, args.hf_dir)
    B, total_batch = batch_sizes(args, cfg, comm.world, resume_B=state["extra"].get("B") if state else None)
    if params is None:
        params = init_params(cfg, args.seed)
    model, B, recompute = build_model(args, cfg, ops, params, B, comm)
    T = args.T
    grad_accum = total_batch // (B * T * comm.world)

    train_loader = DataLoader(args.train_data, B, T, comm.rank, comm.world)
    val_loader = DataLoader(args.val_data, B, T, comm.rank, comm.world) if args.val_every > 0 else None
    val_batches = 0
    if val_loader:
        available = val_loader.num_tokens // (B * T * comm.world)
        val_batches = available if args.val_batches < 0 else min(args.val_batches, available)
    examples = load_hellaswag(args.hellaswag_file, T, cfg.vocab_size) if args.hellaswag else None
    num_steps = args.max_steps if args.max_steps > 0 else train_loader.num_tokens // total_batch
    if num_steps < 1:
        raise LlmpyError(f"-i {args.train_data}: {train_loader.num_tokens:,} tokens, less than one step "
                         f"of {total_batch:,}; use -x or a smaller -d")
    tokenizer = get_tokenizer() if args.sample_every > 0 else None
    prompt = prompt_tokens(tokenizer, args.prompt) if tokenizer else None
    if prompt and max(prompt) >= cfg.vocab_size:
        raise LlmpyError(f"-s {args.sample_every}: a sample starts from <|endoftext|> (token 50256)"
                         f"{' and the --prompt' if args.prompt else ''}, beyond the model's vocabulary of "
                         f"{cfg.vocab_size} tokens; use -s 0")
    rng = np.random.default_rng(args.seed)
    detectors = {"loss": OutlierDetector(args.skip_lossz), "grad": OutlierDetector(args.skip_gradz)}
    start = 0
    if state is not None:
        resume_checkpoint(state, model, train_loader, rng, detectors)
        start = resume_step
        say(f"resumed from step {start} of {args.out_dir}")
    logger = Logger(args.out_dir if comm.rank == 0 else None, resume_step=resume_step)

    say(f"model: L={cfg.num_layers} C={cfg.channels} NH={cfg.num_heads} maxT={cfg.max_seq_len} "
          f"V={cfg.vocab_size} Vp={cfg.padded_vocab_size} | {params.size:,} parameters | "
          f"device {ops.device_name()} | recompute {recompute}"
        + (f" | {comm.world} processes, ZeRO-{args.zero}" if comm.world > 1 else ""))
    say("memory: " + " | ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in model.memory_report().items()))
    if comm.world > 1:
        n = len(model.buckets or ())
        say(f"gradient reduction: {n} bucket{'s' * (n > 1)} of up to {args.bucket_mb:g} MiB, started during the "
            "backward" if n else "gradient reduction: one call after the backward")
    say(f"batch: B={B} T={T} | total {total_batch:,} tokens = {grad_accum} micro-steps | "
          f"train {train_loader.num_tokens:,} tokens | {num_steps} steps | val {val_batches} batches"
          + (f" | HellaSwag {len(examples):,} examples" if examples else ""))

    t_first = None      # when the first step of this process ended: the ETA's clock starts there
    for step in range(start, num_steps + 1):
        last = step == num_steps
        # a resumed run did its evaluations at `start` before writing that checkpoint
        evaluate_now = not (state is not None and step == start)
        if evaluate_now and val_loader and (step % args.val_every == 0 or last):
            val_loss = evaluate(model, val_loader, val_batches)
            say(f"val loss {val_loss:.6f}")
            logger.val(step, val_loss)
        if evaluate_now and examples and ((step > 0 and args.val_every and step % args.val_every == 0) or last):
            right, count = hellaswag.evaluate(model, examples, comm.rank, comm.world)
            right, count = int(comm.sum(right)), int(comm.sum(count))
            say(f"HellaSwag: {right}/{count} = {right / count:.6f}")
            logger.eval(step, right / count)
        if evaluate_now and tokenizer and comm.rank == 0 and ((step > 0 and step % args.sample_every == 0) or last):
            tokens = generate(model, prompt, args.gen_tokens, rng, args.temperature, args.top_k)
            print(f"generating:\n---\n{tokenizer.decode(tokens[1:])}\n---")
        if args.checkpoint_every > 0 and step > start and (step % args.checkpoint_every == 0 or last):
            extra = {"B": B, "T": T, "total_batch": total_batch, "world": comm.world, "zero": args.zero,
                     "outlier": {name: d.state() for name, d in detectors.items()}}
            save_checkpoint(args.out_dir, step, model, train_loader, rng, extra)
            if comm.rank == 0:
                prune_checkpoints(args.out_dir, args.checkpoints_keep, args.major_every)
        if last:
            break

        t0 = time.perf_counter()
        if args.overfit:
            train_loader.reset()
        model.zero_grad()
        train_loss = 0.0
        for micro in range(grad_accum):
            inputs, targets = train_loader.next_batch()
            # only the last micro-step reduces (its backward starts the buckets, if any)
            model.forward_backward(inputs, targets, loss_scale=1.0 / grad_accum,
                                   reduce=micro == grad_accum - 1)
            train_loss += model.mean_loss() / grad_accum
        train_loss = comm.sum(train_loss) / comm.world
        model.reduce_gradients()          # the mean over the processes (none in a single one)
        lr = learning_rate(args.schedule, step, args.lr, args.warmup, num_steps, args.final_lr_frac)
        norm = model.grad_norm()
        zloss, zgrad = detectors["loss"].update(train_loss), detectors["grad"].update(norm)
        if not (math.isfinite(train_loss) and math.isfinite(norm)):
            say(f"skipping update: loss {train_loss} grad norm {norm}")
            logger.skipped(step + 1, "loss" if not math.isfinite(train_loss) else "grad", math.nan)
        elif args.skip_lossz and math.isfinite(zloss) and zloss > args.skip_lossz:
            say(f"skipping update due to loss z-score of {zloss:f}")
            logger.skipped(step + 1, "loss", zloss)
        elif args.skip_gradz and math.isfinite(zgrad) and zgrad > args.skip_gradz:
            say(f"skipping update due to grad z-score of {zgrad:f}")
            logger.skipped(step + 1, "grad", zgrad)
        else:
            model.step = step             # AdamW's t is step + 1, as llm.c's, skipped updates or not
            model.update(lr, weight_decay=args.weight_decay, norm=norm)
        ops.synchronize()
        now = time.perf_counter()
        dt = now - t0
        if t_first is None:
            t_first, per_step = now, dt
        else:
            per_step = (now - t_first) / (step - start)
        eta = format_eta(per_step * (num_steps - step - 1))
        say(f"step {step + 1:4d}/{num_steps} | loss {train_loss:.6f} | norm {norm:.4f} | lr {lr:.2e} "
              f"| {dt * 1000:.2f} ms{mfu_column(cfg, T, total_batch // comm.world, dt, ops)} | "
              f"{total_batch / dt:.0f} tok/s | eta {eta}", flush=True)
        logger.train(step + 1, train_loss, lr, norm, dt * 1000, total_batch / dt)
        if step == start and ops.memory_in_use() is not None:
            say(f"GPU memory in use after the first step: {ops.memory_in_use() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    run_main(main)
