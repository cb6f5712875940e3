"""TinyStories as llm.c token shards (llm.c's dev/data/tinystories.py, through the `datasets`
library): each story stripped of surrounding whitespace, GPT-2 tokens, EOT before each story.
The dataset's validation split becomes tinystories_val_*.bin, its train split
tinystories_train_*.bin, in shards of 100M tokens; streamed, tokenized in parallel processes,
resumable (rerun the same command after an interruption).

    python dev/data/tinystories.py                  # roneneldan/TinyStories -> dev/data/tinystories/
    python dev/data/tinystories.py --local_val val.parquet --local_train train.parquet   # no network

Train on them with: -i "dev/data/tinystories/tinystories_train_*.bin" -j "dev/data/tinystories/tinystories_val_*.bin"
"""
import argparse
import os
from pathlib import Path

from llmpy import LlmpyError, run_main
from llmpy.shards import text_stream, tokenize_to_shards

DATASET = "roneneldan/TinyStories"
PREFIX = "tinystories"
SPLITS = {"val": "validation", "train": "train"}  # our name: the dataset's


def offline_hint():
    return (f"it is https://huggingface.co/datasets/{DATASET}; without internet here, download its parquet files "
            f"elsewhere (`hf download {DATASET} --repo-type dataset --include 'data/*'`), copy them over and pass "
            f"them with --local_val FILE [FILE ...] --local_train FILE [FILE ...]")


def main(argv=None):
    p = argparse.ArgumentParser(description="Tokenize TinyStories into llm.c shards (val and train).")
    p.add_argument("-s", "--shard_size", type=int, default=10**8, help="tokens per shard")
    p.add_argument("-p", "--procs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="tokenizer processes")
    p.add_argument("--local_val", nargs="+", metavar="FILE", help="local .parquet or .jsonl files of the validation "
                   "split (a 'text' field per story) instead of streaming from Hugging Face")
    p.add_argument("--local_train", nargs="+", metavar="FILE", help="the same for the train split")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parent / "tinystories", help="output folder")
    args = p.parse_args(argv)
    local = {"val": args.local_val, "train": args.local_train}
    if bool(args.local_val) != bool(args.local_train):
        raise LlmpyError("--local_val and --local_train go together: give the files of both splits")
    for ours, theirs in SPLITS.items():
        files = local[ours]
        source = ("local:" + ",".join(str(Path(f).resolve()) for f in files)) if files else f"{DATASET}:{theirs}"
        texts = text_stream(DATASET, None, theirs, local=files, strip=True, offline_hint=offline_hint())
        tokenize_to_shards(texts, out_dir=args.out, prefix=PREFIX, run=f"{PREFIX}_{ours}", source=source,
                           shard_size=args.shard_size, split_of=lambda index, split=ours: split, procs=args.procs)


if __name__ == "__main__":
    run_main(main)
