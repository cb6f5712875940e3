"""train_gpt2.py beside llm.c's own CPU trainer, train_gpt2.c, on the same model file and shards.

    python dev/compare_llmc.py --llmc ~/llm.c              # all 41 steps of llm.c's main()
    python dev/compare_llmc.py --llmc ~/llm.c --steps 20   # the first 20, before llm.c's first sample

(an llm.c checkout you bring: nothing is downloaded. Each program takes seconds to a minute a
step on a few CPU cores, and llm.c samples 63 tokens at steps 20 and 40.) llm.c's
train_gpt2.c hard-codes its run: it reads `gpt2_124M.bin` (fp32, version 3) and
`dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin` from its working directory, trains
41 steps of B=4, T=64 with AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay, no
clipping, constant lr), its train data shuffled (seed 42), and every 10 steps prints the mean
loss of the first 5 val batches. This script builds it (llm.c's Makefile, else gcc), gives it
a fresh d12 written by llmpy and our Shakespeare shards through links in a temporary folder,
runs train_gpt2.py with the flags that mean the same run, and prints both losses step by step.
It exits 1 when any loss differs by more than --tolerance (relative).
"""
import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmpy.checkpoint import write_model
from llmpy.config import from_descriptor
from llmpy.gpt2 import init_params

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "dev" / "data" / "shakespeare"
LLMC_STEPS = 41          # train_gpt2.c's main(): for (step = 0; step <= 40; step++)
LLMC_VAL_EVERY = 10
# train_gpt2.c's hard-coded run, in train_gpt2.py's flags
LLMPY_FLAGS = ["--device", "cpu", "-b", "4", "-t", "64", "-d", "256", "-k", "constant", "-l", "1e-4",
               "-u", "0", "-c", "0", "--beta1", "0.9", "--beta2", "0.999", "--eps", "1e-8",
               "--grad_clip", "0", "-sl", "0", "-sg", "0", "--shuffle", "1",
               "-v", str(LLMC_VAL_EVERY), "-m", "5", "-s", "0", "-h", "0"]
# llm.c's Makefile first (-f: no built-in rule without it); plain gcc where make is missing or
# fails, OpenMP only where it builds
BUILDS = (["make", "-f", "Makefile", "train_gpt2"],
          ["gcc", "-Ofast", "-march=native", "-fopenmp", "-DOMP", "train_gpt2.c", "-lm", "-o", "train_gpt2"],
          ["gcc", "-Ofast", "train_gpt2.c", "-lm", "-o", "train_gpt2"])

STEP_LINE = re.compile(r"^step\s+(\d+)(?::\s+train loss|/\d+\s+\|\s+loss)\s+(\S+)")
VAL_LINE = re.compile(r"^val loss\s+(\S+)")


class Losses:
    """Train losses in step order and val losses by the number of updates before them; fed
    the lines of either program (llm.c: `step 3: train loss 10.9`, llmpy: `step    4/41 | loss
    10.9 | ...`; both: `val loss 10.9`)."""

    def __init__(self):
        self.train, self.val = [], {}

    def feed(self, line):
        """True when the line was a loss."""
        if m := STEP_LINE.match(line):
            self.train.append(float(m.group(2)))
        elif m := VAL_LINE.match(line):
            self.val[len(self.train)] = float(m.group(1))
        else:
            return False
        return True


def rel_diff(a, b):
    return abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0


def compare(llmc, llmpy, steps):
    """Rows (what, llm.c loss, llmpy loss, relative difference) for the first `steps` train losses
    and every val loss both have, val after the train step that precedes it."""
    rows = []
    for step in range(steps + 1):
        if step in llmc.val and step in llmpy.val:
            rows.append((f"val @ {step}", llmc.val[step], llmpy.val[step], rel_diff(llmc.val[step], llmpy.val[step])))
        if step < steps:
            a, b = llmc.train[step], llmpy.train[step]
            rows.append((f"step {step}", a, b, rel_diff(a, b)))
    return rows


def run(name, cmd, cwd, losses, done=lambda: False):
    """Run cmd, echoing its loss lines as they come; stop it early once done() holds."""
    print(f"{name}: {' '.join(cmd)}  (in {cwd})", flush=True)
    out = []
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            out.append(line)
            if losses.feed(line):
                print(f"  {name:5s} {line.rstrip()}", flush=True)
            if done():
                proc.terminate()
                break
        proc.wait()
    if proc.returncode and not done():
        sys.exit(f"{name} failed (exit {proc.returncode}):\n{''.join(out[-20:])}")


def build(llmc_dir):
    for cmd in BUILDS:
        if shutil.which(cmd[0]):
            print(f"building llm.c: {' '.join(cmd)}", flush=True)
            if subprocess.run(cmd, cwd=llmc_dir, stdout=subprocess.DEVNULL).returncode == 0:
                return os.path.join(llmc_dir, "train_gpt2")
    sys.exit(f"could not build {llmc_dir}/train_gpt2 with make or gcc")


def prepare(work, train_data, val_data, seed):
    """llm.c's working directory: a fresh d12 as gpt2_124M.bin, and links at its data paths."""
    cfg = from_descriptor("d12")
    model = os.path.join(work, "gpt2_124M.bin")
    print(f"writing {model} (d12, fp32, llmpy's init with seed {seed})", flush=True)
    write_model(model, cfg, init_params(cfg, seed=seed))
    os.makedirs(os.path.join(work, "dev", "data", "tinyshakespeare"))
    for split, path in (("train", train_data), ("val", val_data)):
        os.symlink(os.path.abspath(path),
                   os.path.join(work, "dev", "data", "tinyshakespeare", f"tiny_shakespeare_{split}.bin"))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llmc", required=True, help="an llm.c checkout (train_gpt2.c and llmc/)")
    parser.add_argument("--steps", type=int, default=LLMC_STEPS, help=f"train steps to compare (1..{LLMC_STEPS})")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference that passes")
    parser.add_argument("-i", dest="train_data", default=f"{DATA}/shakespeare_train.bin", help="train shard")
    parser.add_argument("-j", dest="val_data", default=f"{DATA}/shakespeare_val.bin", help="val shard")
    parser.add_argument("--seed", type=int, default=42, help="seed of the d12's weights")
    args = parser.parse_args()
    if not 1 <= args.steps <= LLMC_STEPS:
        sys.exit(f"--steps {args.steps}: llm.c's train_gpt2.c runs {LLMC_STEPS} steps; pick 1..{LLMC_STEPS}")
    if not os.path.isfile(os.path.join(args.llmc, "train_gpt2.c")):
        sys.exit(f"--llmc {args.llmc}: no train_gpt2.c there")

    binary = build(args.llmc)
    # the vals llm.c prints up to the compared steps (the one after the last step included)
    vals_wanted = len(range(0, min(args.steps, LLMC_STEPS - 1) + 1, LLMC_VAL_EVERY))
    llmc, llmpy = Losses(), Losses()
    with tempfile.TemporaryDirectory(prefix="compare_llmc_") as work:
        model = prepare(work, args.train_data, args.val_data, args.seed)
        # stdbuf: llm.c's printf to a pipe is block-buffered; line buffering shows each step as it ends
        stdbuf = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        run("llm.c", stdbuf + [binary], work, llmc,
            done=lambda: len(llmc.train) >= args.steps and len(llmc.val) >= vals_wanted)
        run("llmpy", [sys.executable, str(ROOT / "train_gpt2.py"), "-e", model, "-i", args.train_data,
                      "-j", args.val_data, "-x", str(args.steps)] + LLMPY_FLAGS, ROOT, llmpy)

    rows = compare(llmc, llmpy, args.steps)
    print(f"\n{'':10s} | {'llm.c loss':>10s} | {'llmpy loss':>10s} | rel. diff")
    for what, a, b, diff in rows:
        print(f"{what:10s} | {a:10.6f} | {b:10.6f} | {diff:.1e}")
    worst = max(diff if math.isfinite(diff) else math.inf for *_, diff in rows)
    verdict = "agree" if worst <= args.tolerance else "DIFFER"
    print(f"{verdict}: largest relative difference {worst:.1e} (tolerance {args.tolerance:g}) "
          f"over {args.steps} steps and {sum(what.startswith('val') for what, *_ in rows)} val losses")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
