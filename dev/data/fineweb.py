"""FineWeb and FineWeb-Edu as llm.c token shards, the way llm.c's dev/data/fineweb.py makes them:
GPT-2 tokens, EOT before each document, shards of 100M tokens, the first shard val, the rest
train. The documents are streamed with the `datasets` library (nothing is held in memory or
written to a datasets cache), tokenized in parallel processes, and the run is resumable: rerun
the same command after an interruption and it continues after the last complete shard.

    python dev/data/fineweb.py                      # FineWeb sample-10BT  -> dev/data/fineweb10B/
    python dev/data/fineweb.py -t edu -v 100B       # FineWeb-Edu sample-100BT -> dev/data/edu_fineweb100B/
    python dev/data/fineweb.py --local a.parquet b.parquet -o dev/data/myweb   # local files, no network

Train on them with: -i "dev/data/fineweb10B/fineweb_train_*.bin" -j "dev/data/fineweb10B/fineweb_val_*.bin"
"""
import argparse
import os
from pathlib import Path

from llmpy import run_main
from llmpy.shards import text_stream, tokenize_to_shards

DATASETS = {"classic": ("HuggingFaceFW/fineweb", "fineweb"), "edu": ("HuggingFaceFW/fineweb-edu", "edu_fineweb")}
VERSIONS = {"10B": "sample-10BT", "100B": "sample-100BT"}
HERE = Path(__file__).resolve().parent


def offline_hint(dataset, config):
    folder = "sample/" + config[len("sample-"):]  # sample-10BT -> sample/10BT
    return (f"it is https://huggingface.co/datasets/{dataset} (config {config}); without internet here, download "
            f"its parquet files elsewhere (`hf download {dataset} --repo-type dataset --include '{folder}/*'`), "
            f"copy them over and pass them with --local FILE [FILE ...]")


def split_of(index):
    return "val" if index == 0 else "train"


def main(argv=None):
    p = argparse.ArgumentParser(description="Tokenize FineWeb / FineWeb-Edu into llm.c shards (first shard val).")
    p.add_argument("-t", "--type", default="classic", choices=DATASETS, help="classic: FineWeb; edu: FineWeb-Edu")
    p.add_argument("-v", "--version", default="10B", choices=VERSIONS, help="sample size: 10B (sample-10BT) or 100B (sample-100BT)")
    p.add_argument("-s", "--shard_size", type=int, default=10**8, help="tokens per shard")
    p.add_argument("-p", "--procs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="tokenizer processes")
    p.add_argument("--local", nargs="+", metavar="FILE", help="local .parquet or .jsonl files in FineWeb's schema "
                   "(a 'text' field per document) instead of streaming from Hugging Face")
    p.add_argument("-o", "--out", type=Path, help="output folder (default: dev/data/<edu_>fineweb<version>, "
                   "or dev/data/fineweb_local with --local)")
    args = p.parse_args(argv)
    dataset, prefix = DATASETS[args.type]
    config = VERSIONS[args.version]
    if args.local:
        out = args.out or HERE / "fineweb_local"
        source = "local:" + ",".join(str(Path(f).resolve()) for f in args.local)
    else:
        out = args.out or HERE / f"{'edu_' if args.type == 'edu' else ''}fineweb{args.version}"
        source = f"{dataset}:{config}"
    texts = text_stream(dataset, config, "train", local=args.local, offline_hint=offline_hint(dataset, config))
    tokenize_to_shards(texts, out_dir=out, prefix=prefix, run=prefix, source=source, shard_size=args.shard_size,
                       split_of=split_of, procs=args.procs)


if __name__ == "__main__":
    run_main(main)
