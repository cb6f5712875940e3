"""Train GPT-2 the llm.c way: hand-written forward and backward, one flat parameter buffer.

    python train_gpt2.py -e d6 -b 8 -t 256 -x 200             # a fresh d6 on Shakespeare
    python train_gpt2.py -e model.bin -x 1                      # one step from an llm.c model file
    python train_gpt2.py -e d12 -o log124M -n 500 -y 1          # checkpoints, resumable

Flags are llm.c's (train_gpt2.cu) where they apply; run with --help for the list.
"""
import argparse
import math
import os
import signal
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from llmpy import JobError, LlmpyError, Stopped, backends, distributed, faults, hellaswag, outdir, run_main
from llmpy.autofit import AUTO_START_B, advice, auto_start_B, fit, is_out_of_memory, release_memory
from llmpy.checkpoint import (check_finite, checkpoint_paths, checkpoints_to_delete, complete_checkpoint_steps,
                              delete_checkpoint, describe, latest_checkpoint_step, named_params, read_model,
                              read_model_config, read_state, remove_stale_temps, write_done_marker, write_model,
                              write_state)
from llmpy.cli import Parser
from llmpy.config import DESCRIPTORS, from_descriptor, num_parameters
from llmpy.dataloader import DataLoader
from llmpy.fetch import data_dir
from llmpy.gpt2 import GPT2, init_params
from llmpy.optim import AdamW
from llmpy.logger import Logger, format_eta
from llmpy.mfu import mfu
from llmpy.models import HF_DIR_HELP, MODEL_HELP, load_model_params
from llmpy.outlier import OutlierDetector
from llmpy.progress import progress_bar
from llmpy.sampler import generate, prompt_tokens
from llmpy.schedulers import SCHEDULES, learning_rate
from llmpy.tokenizer import get_tokenizer
from llmpy.watchdog import Watchdog

DATA = data_dir() / "shakespeare"


def batch_size(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: an integer or auto") from None


def arg_parser():
    p = Parser(prog="train_gpt2.py", add_help=False, allow_abbrev=False,
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               description="Train GPT-2 with llmpy (llm.c's flags).")
    p.add_argument("--help", action="help", help="show this help and exit")
    arg = p.add_argument
    # files
    arg("-i", dest="train_data", default=f"{DATA}/shakespeare_train.bin", help="train token shards (glob)")
    arg("-j", dest="val_data", default=f"{DATA}/shakespeare_val.bin", help="val token shards (glob)")
    arg("-e", dest="model", default="d12", help=MODEL_HELP)
    arg("--hf_dir", default=None, help=HF_DIR_HELP)
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
    arg("--shuffle", type=int, default=1, choices=(0, 1),
        help="1: read the train data in llm.c's shuffled order (shards and samples permuted by its "
        "Mersenne Twister, seed 42 + rank); 0: in file order (-a 1 always reads in file order)")
    # optimization
    arg("-k", dest="schedule", default="cosine", choices=SCHEDULES, help="learning-rate schedule")
    arg("-l", dest="lr", type=float, default=3e-4, help="peak learning rate")
    arg("-u", dest="warmup", type=int, default=0, help="learning-rate warmup steps")
    arg("-q", dest="final_lr_frac", type=float, default=1.0, help="final learning rate as a fraction of -l")
    arg("-c", dest="weight_decay", type=float, default=0.0, help="AdamW weight decay (2-D weights only)")
    arg("--beta1", type=float, default=0.9, help="AdamW beta1")
    arg("--beta2", type=float, default=0.95, help="AdamW beta2 (llm.c's train_gpt2.c uses 0.999)")
    arg("--eps", type=float, default=1e-8, help="AdamW epsilon")
    arg("--grad_clip", type=float, default=1.0,
        help="clip the gradient to this global norm (0: no clipping, as llm.c's train_gpt2.c)")
    arg("-sl", dest="skip_lossz", type=float, default=0.0,
        help="skip the update when the loss's z-score over the last 64 steps exceeds this (0: off)")
    arg("-sg", dest="skip_gradz", type=float, default=0.0,
        help="skip the update when the grad norm's z-score over the last 64 steps exceeds this (0: off)")
    arg("-r", dest="recompute", type=int, default=0, choices=(0, 1, 2),
        help="recompute in the backward to save memory: 0 none, 1 GELU, 2 GELU and LayerNorm")
    arg("--fp8", type=int, default=0, choices=(0, 1),
        help="1: the blocks' linear layers (qkv, attproj, fc, fcproj) in FP8: E4M3 activations and "
        "weights, E5M2 gradients, delayed per-tensor scales (a GPU needs compute capability 8.9+, "
        "the CPU emulates it)")
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
    arg("--prompt", default=None, help="sample continuations of this text (none: from <|endoftext|>)")
    arg("--temperature", type=float, default=1.0, help="sampling temperature")
    arg("--top_k", type=int, default=0, help="sample from the K most likely tokens only (0: all)")
    # debugging, device
    arg("-a", dest="overfit", type=int, default=0, choices=(0, 1), help="1: overfit a single batch")
    arg("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    arg("--seed", type=int, default=42, help="seed for a fresh model's weights and for sampling")
    arg("--max_skips", type=int, default=16,
        help="stop the run when this many updates in a row were skipped (non-finite or -sl/-sg; 0: never)")
    arg("--watchdog", type=float, default=-1.0, help="end the job when a step makes no progress for this "
        "many seconds (-1: 20x the median step time, at least 300; 0: never); start-up, evaluation and "
        "checkpoint writes get at least 900")
    return p


def parse_args(argv):
    return arg_parser().parse_args(argv)


def check_args(args):
    """Values argparse cannot check by itself: one line naming the flag."""
    floats = {"-l": args.lr, "-q": args.final_lr_frac, "-c": args.weight_decay, "-sl": args.skip_lossz,
              "-sg": args.skip_gradz, "--temperature": args.temperature, "--watchdog": args.watchdog}
    for flag, value in floats.items():
        if not math.isfinite(value):
            raise LlmpyError(f"{flag} {value}: must be a finite number")
    rules = [
        (args.B == "auto" or args.B >= 1, f"-b {args.B}: the micro-batch must be positive, or auto"),
        (args.T >= 1, f"-t {args.T}: the sequence length must be positive"),
        (args.total_batch == -1 or args.total_batch >= 1, f"-d {args.total_batch}: must be positive, or -1"),
        (args.max_steps == -1 or args.max_steps >= 1, f"-x {args.max_steps}: must be positive, or -1 for one epoch"),
        (args.lr >= 0, f"-l {args.lr}: the learning rate cannot be negative"),
        (args.warmup >= 0, f"-u {args.warmup}: warmup steps cannot be negative"),
        (args.final_lr_frac >= 0, f"-q {args.final_lr_frac}: the final lr fraction cannot be negative"),
        (args.weight_decay >= 0, f"-c {args.weight_decay}: weight decay cannot be negative"),
        (0 <= args.beta1 < 1, f"--beta1 {args.beta1}: must be in [0, 1)"),
        (0 <= args.beta2 < 1, f"--beta2 {args.beta2}: must be in [0, 1)"),
        (0 < args.eps < math.inf, f"--eps {args.eps}: must be positive and finite"),
        (0 <= args.grad_clip < math.inf, f"--grad_clip {args.grad_clip}: must be finite and not negative (0: no clipping)"),
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
        (args.max_skips >= 0, f"--max_skips {args.max_skips}: cannot be negative (0: never stop)"),
        (args.watchdog == -1 or args.watchdog >= 0, f"--watchdog {args.watchdog}: seconds, 0 (off) or -1 (auto)"),
    ]
    for ok, message in rules:
        if not ok:
            raise LlmpyError(message)


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
    """The model at micro-batch B and its optimizer; with -b auto, the largest B that fits
    both (see llmpy/autofit.py). Returns (model, optimizer, B, recompute)."""
    def build(b, recompute):
        model = GPT2(cfg, ops, b, args.T, params=params, recompute=recompute, comm=comm,
                     zero=args.zero, bucket_bytes=args.bucket_mb * 2**20 if args.overlap else None,
                     fp8=args.fp8)
        optimizer = AdamW(model, params, beta1=args.beta1, beta2=args.beta2, eps=args.eps,
                          weight_decay=args.weight_decay, grad_clip=args.grad_clip)
        if args.B == "auto":      # one forward/backward at full size finds what the first step needs
            zeros = np.zeros((b, args.T), dtype=np.int32)
            model.forward(zeros, zeros)
            model.backward()
            optimizer.grad_norm()
            model.zero_grad()
            if model.fp8:       # the trial batch's scales are not the run's
                model.fp8.forget()
            ops.synchronize()
        return model, optimizer
    if args.B != "auto":
        return *build(B, args.recompute), B, args.recompute
    (model, optimizer), B, recompute = fit(build, B, args.recompute, release=lambda: release_memory(ops))
    comm.say(f"-b auto: chose B={B} -r {recompute}")
    return model, optimizer, B, recompute


# --------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(out_dir, step, model, optimizer, loader, rng, extra, fault=None):
    """llm.c's checkpoint: the model file (the weights as the model holds them: bf16 on a GPU,
    fp32 master weights, AdamW m, v and the rest in the state file, one per process: its shard
    with ZeRO-1), then, once every process has written, DONE_<step>."""
    comm = model.comm
    model_path, state_path = checkpoint_paths(out_dir, step, rank=comm.rank)
    newest = latest_checkpoint_step(out_dir)
    try:
        with comm.together(f"checkpoint {step} not written ("
                           + (f"the newest complete one is step {newest}" if newest is not None else
                              "no complete one yet") + "): "):
            if comm.rank == 0:
                # the weights exactly as the model holds them, fp32 on the CPU and bf16 on a GPU
                # (the fp32 master weights go into the state); with ZeRO-1 the buffer is padded
                weights = model.ops.to_host(model.params_flat[:num_parameters(model.cfg)]).astype(np.float32)
                check_finite(f"step {step}", named_params(model.cfg, weights))
                write_model(model_path, model.cfg, weights, dtype="fp32" if optimizer.master is None else "bf16")
            if fault:
                fault.reached("checkpoint", step, comm.rank)
            m, v = model.ops.to_host(optimizer.m), model.ops.to_host(optimizer.v)
            master = None if optimizer.master is None else model.ops.to_host(optimizer.master)
            check_finite(f"step {step}", [("AdamW m", m), ("AdamW v", v)]
                         + ([("master weights", master)] if master is not None else []))
            write_state(state_path, step=step, m=m, v=v, master=master,
                        rng_state=rng.bit_generator.state, loader_state=loader.state(), extra=extra)
    except BaseException:
        # no DONE marker will name these files: an incomplete checkpoint is only clutter
        if step not in complete_checkpoint_steps(out_dir):
            for path in (model_path, state_path) if comm.rank == 0 else (state_path,):
                if os.path.isfile(path):
                    os.remove(path)
        raise
    if comm.rank == 0:
        write_done_marker(out_dir, step)
    comm.say(f"checkpoint written: {model_path}")


def prune_checkpoints(out_dir, keep, major_every):
    for step in checkpoints_to_delete(complete_checkpoint_steps(out_dir), keep, major_every):
        delete_checkpoint(out_dir, step)
        print(f"checkpoint deleted: step {step} (-nk {keep}{f' -nm {major_every}' if major_every else ''})")


def claim_out_dir(args, comm):
    """-o before anything is built: every process can write it; rank 0 locks it (the lock file
    it returns holds the lock while open), refuses it to a fresh run where another run left
    its files, and removes the temp files a crash left of complete checkpoints."""
    if not args.out_dir:
        return None
    outdir.make(args.out_dir)
    if comm.rank != 0:
        return None
    lock = outdir.lock(args.out_dir, comm.say)
    if not args.resume:
        outdir.check_fresh(args.out_dir)
    for name in remove_stale_temps(args.out_dir):
        comm.say(f"removed {name}: left by a crash while its checkpoint was written again")
    return lock


def load_checkpoint(args, comm):
    """-y 1: (step, cfg, params, state) of the newest complete checkpoint that every process
    can read, falling back to older ones with a line saying why; Nones for a fresh start."""
    steps = complete_checkpoint_steps(args.out_dir) if args.resume else []
    if args.resume and not steps:
        comm.say(f"-y 1: no complete checkpoint in {args.out_dir}: starting from scratch")
    for i in reversed(range(len(steps))):
        step, older = steps[i], steps[i - 1] if i else None
        try:
            with comm.together(f"-y 1: checkpoint {step}: "):
                model_path, state_path = checkpoint_paths(args.out_dir, step, rank=comm.rank)
                cfg, params = read_model(model_path)        # the checkpoint's weights replace -e's
                state = read_state(state_path)
            return step, cfg, params, state
        except LlmpyError as e:
            if older is None:
                raise JobError(f"{e}; no older complete checkpoint to fall back to", speaker=comm.rank == 0) from None
            comm.say(f"{e}; falling back to checkpoint {older}")
    return None, None, None, None


def check_resumed_model(args, cfg):
    """-e names the model a fresh run starts from; resumed, it must describe the checkpoint's."""
    if args.model in DESCRIPTORS:
        named = from_descriptor(args.model)
    elif os.path.isfile(args.model):
        named = read_model_config(args.model)
    else:
        return          # a Hugging Face model: reading it only to compare is not worth its time
    if named != cfg:
        raise LlmpyError(f"-y 1: the checkpoint in {args.out_dir} holds a {describe(cfg)} model, -e {args.model} "
                         f"a {describe(named)} one; resume with that run's -e, or start this one in another -o")


def check_resumed_batch(extra, args, total_batch, world):
    """Processes, -z, T and the total batch are the run's: the state files and the data
    position depend on them, and another total batch changes every step that follows."""
    if extra.get("world", 1) != world or extra.get("zero", 0) != args.zero:
        raise LlmpyError(f"-y 1: the checkpoint was written by {extra.get('world', 1)} process(es) with "
                         f"-z {extra.get('zero', 0)}; resume it with as many and the same -z "
                         f"(this run: {world}, -z {args.zero})")
    if extra.get("T") != args.T:
        raise LlmpyError(f"-y 1: the checkpoint was written with T={extra.get('T')}, this run has -t {args.T}")
    if "total_batch" in extra and extra["total_batch"] != total_batch:
        raise LlmpyError(f"-y 1: the checkpoint's run has a total batch of {extra['total_batch']:,} tokens, this one "
                         f"{total_batch:,} (-b {args.B} -t {args.T} -d {args.total_batch}); give -d "
                         f"{extra['total_batch']} to resume it")


def schedule(args, num_steps):
    """The flags that shape the learning rate and weight decay of every step, as a checkpoint keeps them."""
    return {"-k": args.schedule, "-l": args.lr, "-u": args.warmup, "-q": args.final_lr_frac, "-c": args.weight_decay,
            "-x": num_steps}


def say_schedule_changes(comm, extra, now, step):
    then = extra.get("schedule", now)
    changed = [f"{flag} {now[flag]} (was {then[flag]})" for flag in now if flag in then and then[flag] != now[flag]]
    if changed:
        comm.say(f"-y 1: resuming with {', '.join(changed)}: from step {step} on, the learning rate and weight "
                 "decay follow this run's flags")


def resume_checkpoint(state, model, optimizer, loader, rng, detectors):
    """Load a state file's optimizer, data, RNG and outlier-detector state into this run."""
    extra = state["extra"]
    # checkpoints from before --shuffle existed read in file order
    shuffled = extra.get("shuffle", 0)
    if shuffled != int(loader.shuffle):
        raise LlmpyError(f"-y 1: the checkpoint read the train data {'shuffled' if shuffled else 'in file order'}; "
                         f"resume it with --shuffle {shuffled}" + ("" if shuffled else " (or -a 1)")
                         + f" (this run: {'shuffled' if loader.shuffle else 'file order'})")
    if loader.shuffle and extra.get("B") != model.B:
        raise LlmpyError(f"-y 1: the checkpoint's shuffled order is of samples of B={extra.get('B')} rows; "
                         f"resume it with -b {extra.get('B')} (this run: B={model.B})")
    if extra.get("B") != model.B:
        model.comm.say(f"resuming with B={model.B} where the checkpoint had B={extra.get('B')}: "
              "the same data, losses equal within float rounding")
    if state["m"].size != optimizer.m.size:
        raise LlmpyError(f"-y 1: the checkpoint's AdamW state has {state['m'].size:,} values, this run's "
                         f"{optimizer.m.size:,} (another model, or another number of processes with ZeRO-1)")
    ops = model.ops
    optimizer.m[...] = ops.to_device(state["m"])
    optimizer.v[...] = ops.to_device(state["v"])
    if optimizer.master is not None and state["master"] is not None:
        optimizer.master[...] = ops.to_device(state["master"])
    elif optimizer.master is None and state["master"] is not None:   # a GPU run resumed on the CPU
        if state["master"].size != model.params_flat.size:
            raise LlmpyError("-y 1: the checkpoint's master weights are sharded (ZeRO-1); resume it with as many processes")
        model.params_flat[...] = ops.to_device(state["master"])
    optimizer.step = state["step"]
    loader.load_state(state["loader_state"])
    rng.bit_generator.state = state["rng_state"]
    for name, detector in detectors.items():
        if name in extra.get("outlier", {}):
            detector.load_state(extra["outlier"][name])
    if model.fp8 and "fp8" in extra:
        model.fp8.load_state(extra["fp8"])


# --------------------------------------------------------------------------------------------
# what a run prints, and its evaluations

def memory_report(model, optimizer):
    """Bytes of each buffer, as llm.c prints its allocations at start."""
    sizes = {"parameters": model.params_flat.nbytes, "gradients": model.grads_flat.nbytes,
             "AdamW m, v": optimizer.m.nbytes + optimizer.v.nbytes, "activations": model.acts_bytes.nbytes}
    if optimizer.master is not None:
        sizes["master weights"] = optimizer.master.nbytes
    return sizes


def where_it_writes(args, model, optimizer, world):
    """The run's outputs, and what each checkpoint costs on disk (the model file, and every
    process's state file: AdamW's m and v, and master weights where there are any)."""
    sizes = memory_report(model, optimizer)
    state = world * (sizes["AdamW m, v"] + sizes.get("master weights", 0))
    line = f"writing {os.path.join(args.out_dir, 'main.log')}"
    if args.checkpoint_every > 0:
        keep = f"keeping the newest {args.checkpoints_keep}" if args.checkpoints_keep else "keeping all (-nk)"
        line += (f" | a checkpoint every {args.checkpoint_every} steps: {sizes['parameters'] / 1e6:,.0f} MB "
                 f"model + {state / 1e6:,.0f} MB state, {keep}")
    return line


class RunSummary:
    """The closing line: steps and tokens of this run, its wall time, last and best val loss,
    last HellaSwag."""

    def __init__(self, start, total_batch):
        self.start, self.total_batch, self.t0 = start, total_batch, time.perf_counter()
        self.val_losses, self.hellaswag = [], None

    def val(self, loss):
        self.val_losses.append(loss)

    def line(self, step):
        seconds = time.perf_counter() - self.t0
        tokens = (step - self.start) * self.total_batch
        parts = [f"done: {step - self.start} steps, {tokens:,} tokens in {format_eta(seconds)} "
                 f"({tokens / max(seconds, 1e-9):,.0f} tok/s)"]
        if self.val_losses:
            parts.append(f"val loss {self.val_losses[-1]:.6f} (best {min(self.val_losses):.6f})")
        if self.hellaswag is not None:
            parts.append(f"HellaSwag {self.hellaswag:.6f}")
        return " | ".join(parts)


def evaluate(model, loader, num_batches, progress):
    """Mean loss over num_batches of the loader (each process its share of every batch);
    progress() is called before each batch."""
    loader.reset()
    total = 0.0
    for _ in progress_bar(range(num_batches), desc="val loss", unit="batch", show=model.comm.rank == 0):
        progress()
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
    if not ops.reports_mfu:
        return ""
    fraction = mfu(cfg, T, tokens, seconds, ops.device_name())
    return " | n/a MFU" if fraction is None else f" | {100 * fraction:.1f}% bf16 MFU"


# --------------------------------------------------------------------------------------------

def resume_hint(out_dir):
    steps = complete_checkpoint_steps(out_dir) if out_dir else []
    return (f"resume from step {steps[-1]} with -y 1 -o {out_dir}" if steps else
            "no complete checkpoint to resume from" + ("" if out_dir else " (no -o)"))


def stop_on_signals(out_dir, progress):
    """SIGINT and SIGTERM end the run with one line saying where it can resume; a checkpoint
    being written is removed on the way out (save_checkpoint)."""
    def stop(signum, frame):
        raise Stopped(f"stopped by {signal.Signals(signum).name} during {progress()}; {resume_hint(out_dir)}")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    # from here on a stop signal is one line, and a start-up that hangs (a GPU, a launcher, a
    # filesystem) is ended too
    watchdog = Watchdog(None if args.watchdog == -1 else args.watchdog)
    stop_on_signals(args.out_dir, watchdog.where)
    try:
        ops = backends.load(args.device)
        comm = distributed.init(ops)
        watchdog.guard(comm)
        train(args, ops, comm, watchdog)
    finally:
        watchdog.stop()


def train(args, ops, comm, watchdog):
    try:
        train_loop(setup(args, ops, comm, watchdog))
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


# --------------------------------------------------------------------------------------------
# setup: the flags to a run ready for its first step

@dataclass
class Training:
    """What a run holds from its setup to its last step (llm.c's main's locals)."""
    args: argparse.Namespace
    ops: ModuleType
    comm: distributed.Comm
    watchdog: Watchdog
    fault: faults.Fault | None          # a fault planted by LLMPY_FAULT, for the fault tests
    lock: object                        # -o's lock file: the lock lasts while it is open
    model: GPT2
    optimizer: AdamW
    total_batch: int                    # tokens of one step, over every process
    grad_accum: int                     # micro-steps of one step
    num_steps: int
    train_loader: DataLoader
    val_loader: DataLoader | None
    val_batches: int
    examples: list | None               # HellaSwag's (-h 1)
    tokenizer: object                   # for samples (-s), or None
    prompt: list | None                 # the samples' first tokens
    rng: np.random.Generator            # the samples' draws
    detectors: dict                     # outlier detectors of the loss and the grad norm (-sl, -sg)
    start: int                          # the first step: 0, or the checkpoint's
    resumed: bool
    logger: Logger
    summary: RunSummary
    skipped_in_a_row: int = 0           # updates skipped since the last one taken
    t_first: float | None = None        # when this process's first step ended: the ETA's clock starts there


def setup(args, ops, comm, watchdog):
    """The model and its optimizer (from -e, or from the newest checkpoint with -y 1), the data,
    the evaluations and samples, and a resumed run's optimizer, data, RNG and detector state;
    then the lines that describe the run."""
    say = comm.say
    # a non-finite loss, norm or weight gets its own line (a skipped update, a refused
    # checkpoint); NumPy's warnings about the same overflow would only repeat it, unreadably
    np.seterr(over="ignore", invalid="ignore")
    fault = faults.from_environment()
    # every process reads its own files here (the model or checkpoint, its state file, the
    # shards, the eval file): where one fails, all stop with its line
    with comm.together():
        if args.B == "auto" and comm.world > 1:
            raise LlmpyError(f"-b auto runs in a single process; with {comm.world}, give -b")
        lock = claim_out_dir(args, comm)
    resume_step, cfg, params, state = load_checkpoint(args, comm)
    with comm.together():
        if state is None:
            cfg, params = load_model_params(args.model, args.hf_dir)
        else:
            check_resumed_model(args, cfg)
        B, total_batch = batch_sizes(args, cfg, comm.world, resume_B=state["extra"].get("B") if state else None)
        if state is not None:
            check_resumed_batch(state["extra"], args, total_batch, comm.world)
        if params is None:
            params = init_params(cfg, args.seed)
        model, optimizer, B, recompute = build_model(args, cfg, ops, params, B, comm)
        T = args.T
        grad_accum = total_batch // (B * T * comm.world)
        train_loader, val_loader, val_batches = data_loaders(args, cfg, B, comm)
        examples = load_hellaswag(args.hellaswag_file, T, cfg.vocab_size) if args.hellaswag else None
        num_steps = args.max_steps if args.max_steps > 0 else train_loader.num_tokens // total_batch
        if num_steps < 1:
            raise LlmpyError(f"-i {args.train_data}: {train_loader.num_tokens:,} tokens, less than one step "
                             f"of {total_batch:,}; use -x or a smaller -d")
        tokenizer, prompt = sampling(args, cfg)
        rng = np.random.default_rng(args.seed)
        detectors = {"loss": OutlierDetector(args.skip_lossz), "grad": OutlierDetector(args.skip_gradz)}
        start = 0
        if state is not None:
            if num_steps <= resume_step:
                raise LlmpyError(f"-x {args.max_steps}{f' (one epoch: {num_steps} steps)' if args.max_steps < 0 else ''}: "
                                 f"the checkpoint in {args.out_dir} is at step {resume_step} already; "
                                 "give a larger -x to train on")
            resume_checkpoint(state, model, optimizer, train_loader, rng, detectors)
            say_schedule_changes(comm, state["extra"], schedule(args, num_steps), resume_step)
            start = resume_step
            say(f"resumed from step {start} of {args.out_dir}")
        logger = Logger(args.out_dir if comm.rank == 0 else None, resume_step=resume_step)

    say(f"model: L={cfg.num_layers} C={cfg.channels} NH={cfg.num_heads} maxT={cfg.max_seq_len} "
          f"V={cfg.vocab_size} Vp={cfg.padded_vocab_size} | {params.size:,} parameters | "
          f"device {ops.device_name()} | recompute {recompute}" + (" | FP8 linear layers" if args.fp8 else "")
        + (f" | {comm.world} processes, ZeRO-{args.zero}" if comm.world > 1 else ""))
    say("memory: " + " | ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in memory_report(model, optimizer).items()))
    if comm.world > 1:
        n = len(model.buckets or ())
        say(f"gradient reduction: {n} bucket{'s' * (n > 1)} of up to {args.bucket_mb:g} MiB, started during the "
            "backward" if n else "gradient reduction: one call after the backward")
    say(f"batch: B={B} T={T} | total {total_batch:,} tokens = {grad_accum} micro-steps | "
          f"train {train_loader.num_tokens:,} tokens, {'shuffled' if train_loader.shuffle else 'in file order'} | "
          f"{num_steps} steps | val {val_batches} batches"
          + (f" | HellaSwag {len(examples):,} examples" if examples else ""))
    if args.out_dir:
        say(where_it_writes(args, model, optimizer, comm.world))
    return Training(args=args, ops=ops, comm=comm, watchdog=watchdog, fault=fault, lock=lock, model=model,
                    optimizer=optimizer, total_batch=total_batch, grad_accum=grad_accum, num_steps=num_steps,
                    train_loader=train_loader, val_loader=val_loader, val_batches=val_batches, examples=examples,
                    tokenizer=tokenizer, prompt=prompt, rng=rng, detectors=detectors, start=start,
                    resumed=state is not None, logger=logger, summary=RunSummary(start, total_batch))


def data_loaders(args, cfg, B, comm):
    """(train loader, val loader or None, val batches per evaluation)."""
    train_loader = DataLoader(args.train_data, B, args.T, comm.rank, comm.world,
                              shuffle=bool(args.shuffle) and not args.overfit, vocab_size=cfg.vocab_size)
    if args.val_every == 0:
        return train_loader, None, 0
    val_loader = DataLoader(args.val_data, B, args.T, comm.rank, comm.world, vocab_size=cfg.vocab_size)
    available = val_loader.num_tokens // (B * args.T * comm.world)
    return train_loader, val_loader, available if args.val_batches < 0 else min(args.val_batches, available)


def sampling(args, cfg):
    """(tokenizer, the samples' first tokens) with -s, else (None, None)."""
    tokenizer = get_tokenizer() if args.sample_every > 0 else None
    prompt = prompt_tokens(tokenizer, args.prompt) if tokenizer else None
    if prompt and max(prompt) >= cfg.vocab_size:
        raise LlmpyError(f"-s {args.sample_every}: a sample starts from <|endoftext|> (token 50256)"
                         f"{' and the --prompt' if args.prompt else ''}, beyond the model's vocabulary of "
                         f"{cfg.vocab_size} tokens; use -s 0")
    return tokenizer, prompt


# --------------------------------------------------------------------------------------------
# the main loop, llm.c's: at each step the evaluations due, a checkpoint, then the training step

def train_loop(t):
    args = t.args
    for step in range(t.start, t.num_steps + 1):
        last = step == t.num_steps
        # a resumed run did its evaluations at `start` before writing that checkpoint
        if not (t.resumed and step == t.start):
            if t.val_loader and (step % args.val_every == 0 or last):
                val_loss(t, step)
            if t.examples and ((step > 0 and args.val_every and step % args.val_every == 0) or last):
                hellaswag_accuracy(t, step)
            if t.tokenizer and t.comm.rank == 0 and ((step > 0 and step % args.sample_every == 0) or last):
                sample(t, step)
        if args.checkpoint_every > 0 and step > t.start and (step % args.checkpoint_every == 0 or last):
            checkpoint(t, step)
        if last:
            t.comm.say(t.summary.line(step))
            return
        train_step(t, step)


def val_loss(t, step):
    loss = evaluate(t.model, t.val_loader, t.val_batches, lambda: t.watchdog.beat(step, "the val loss", slow=True))
    t.comm.say(f"val loss {loss:.6f}")
    t.summary.val(loss)
    t.logger.val(step, loss)


def hellaswag_accuracy(t, step):
    comm = t.comm
    right, count = hellaswag.evaluate(t.model, t.examples, comm.rank, comm.world,
                                      lambda: t.watchdog.beat(step, "HellaSwag", slow=True))
    t.watchdog.beat(step, "the HellaSwag counts' all-reduce", slow=True)
    right, count = int(comm.sum(right)), int(comm.sum(count))
    comm.say(f"HellaSwag: {right}/{count} = {right / count:.6f}")
    t.summary.hellaswag = right / count
    t.logger.eval(step, right / count)


def sample(t, step):
    t.watchdog.beat(step, "sampling", slow=True)
    args = t.args
    tokens = generate(t.model, t.prompt, args.gen_tokens, t.rng, args.temperature, args.top_k)
    print(f"generating:\n---\n{t.tokenizer.decode(tokens[1:])}\n---")


def checkpoint(t, step):
    t.watchdog.beat(step, "the checkpoint write", slow=True)
    args, model = t.args, t.model
    extra = {"B": model.B, "T": model.T, "total_batch": t.total_batch, "world": t.comm.world, "zero": args.zero,
             "shuffle": int(t.train_loader.shuffle),
             "outlier": {name: d.state() for name, d in t.detectors.items()},
             "schedule": schedule(args, t.num_steps)}
    if model.fp8:           # this process's FP8 scales and their history: resumed, the casts go on
        extra["fp8"] = model.fp8.state()
    save_checkpoint(args.out_dir, step, model, t.optimizer, t.train_loader, t.rng, extra, t.fault)
    if t.comm.rank == 0:
        prune_checkpoints(args.out_dir, args.checkpoints_keep, args.major_every)


def train_step(t, step):
    """Step step + 1: the gradient of the total batch, the update (or a skip), the step line."""
    t0 = time.perf_counter()
    loss = accumulate_gradients(t, step)
    args = t.args
    lr = learning_rate(args.schedule, step, args.lr, args.warmup, t.num_steps, args.final_lr_frac)
    t.watchdog.beat(step + 1, "the gradient norm and the update")
    norm = t.optimizer.grad_norm()
    update_or_skip(t, step, loss, norm, lr)
    t.ops.synchronize()
    report_step(t, step, loss, norm, lr, t0)


def accumulate_gradients(t, step):
    """The gradient of the step's total batch, over its micro-steps and every process, mean
    reduced; returns the mean loss."""
    model, watchdog = t.model, t.watchdog
    if t.args.overfit:
        t.train_loader.reset()
    model.zero_grad()
    loss = 0.0
    for micro in range(t.grad_accum):
        watchdog.beat(step + 1, f"micro-step {micro + 1}/{t.grad_accum}'s forward and backward")
        if t.fault:
            t.fault.reached("step", step + 1, t.comm.rank)
        inputs, targets = t.train_loader.next_batch()
        # only the last micro-step reduces (its backward starts the buckets, if any)
        model.forward_backward(inputs, targets, loss_scale=1.0 / t.grad_accum, reduce=micro == t.grad_accum - 1)
        loss += model.mean_loss() / t.grad_accum
    watchdog.beat(step + 1, "the loss all-reduce (every process)")
    loss = t.comm.sum(loss) / t.comm.world
    watchdog.beat(step + 1, "the gradient all-reduce (every process)")
    model.reduce_gradients()          # the mean over the processes (none in a single one)
    return loss


def update_or_skip(t, step, loss, norm, lr):
    """The update, skipped where the loss or the norm is not finite or (-sl, -sg) an outlier;
    --max_skips updates skipped in a row end the run."""
    args, say = t.args, t.comm.say
    zloss, zgrad = t.detectors["loss"].update(loss), t.detectors["grad"].update(norm)
    t.skipped_in_a_row += 1
    if not (math.isfinite(loss) and math.isfinite(norm)):
        say(f"skipping update: loss {loss} grad norm {norm}")
        t.logger.skipped(step + 1, "loss" if not math.isfinite(loss) else "grad", math.nan)
    elif args.skip_lossz and math.isfinite(zloss) and zloss > args.skip_lossz:
        say(f"skipping update due to loss z-score of {zloss:f}")
        t.logger.skipped(step + 1, "loss", zloss)
    elif args.skip_gradz and math.isfinite(zgrad) and zgrad > args.skip_gradz:
        say(f"skipping update due to grad z-score of {zgrad:f}")
        t.logger.skipped(step + 1, "grad", zgrad)
    else:
        t.skipped_in_a_row = 0
        t.optimizer.step = step          # AdamW's t is step + 1, as llm.c's, skipped updates or not
        t.optimizer.update(lr, norm=norm)
    if args.max_skips and t.skipped_in_a_row >= args.max_skips:
        # the loss and the norm are all-reduced: every process stops here at once
        raise JobError(f"step {step + 1}: {t.skipped_in_a_row} updates in a row were skipped (loss {loss}, "
                       f"grad norm {norm}); stopping (--max_skips {args.max_skips}); {resume_hint(args.out_dir)}",
                       speaker=t.comm.rank == 0)


def report_step(t, step, loss, norm, lr, t0):
    """llm.c's step line (and main.log's), timed from t0 to now, after the step's work is done."""
    now = time.perf_counter()
    dt = now - t0
    t.watchdog.step_time(dt)
    if t.t_first is None:
        t.t_first, per_step = now, dt
    else:
        per_step = (now - t.t_first) / (step - t.start)
    eta = format_eta(per_step * (t.num_steps - step - 1))
    model, total_batch, ops = t.model, t.total_batch, t.ops
    t.comm.say(f"step {step + 1:4d}/{t.num_steps} | loss {loss:.6f} | norm {norm:.4f} | lr {lr:.2e} "
               f"| {dt * 1000:.2f} ms{mfu_column(model.cfg, model.T, total_batch // t.comm.world, dt, ops)} | "
               f"{total_batch / dt:.0f} tok/s | eta {eta}", flush=True)
    t.logger.train(step + 1, loss, lr, norm, dt * 1000, total_batch / dt)
    if step == t.start and ops.memory_in_use() is not None:
        t.comm.say(f"GPU memory in use after the first step: {ops.memory_in_use() / 2**20:,.0f} MiB")

if __name__ == "__main__":
    run_main(main)
