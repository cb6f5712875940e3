"""A corpus that needs no network and does not repeat soon: every .py file under the given folders
(by default this Python's standard library and site-packages), one document each, as llm.c token
shards; every 40th file (in sorted path order) goes to val. On the GPU machine of
docs/performance.md ("FP8 in the model") that was 25,701 files, 177M train tokens: 1,000 steps of
65,536 tokens read a third of it, where Shakespeare would repeat 46 times.

    python dev/data/pycode.py [--out DIR] [FOLDER ...]   # writes DIR/pycode_{val,train}.bin
"""
import argparse
import multiprocessing
import sysconfig
import time
from pathlib import Path

from llmpy import LlmpyError, run_main
from llmpy.progress import progress_bar
from llmpy.shards import write_datafile
from llmpy.tokenizer import EOT, get_tokenizer

VAL_EVERY = 40


def document(path):
    """[EOT] + the GPT-2 tokens of one file; [] for one that is not UTF-8 text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [EOT] + get_tokenizer().encode_ordinary(text)


def python_files(folders):
    files = sorted({str(p) for folder in folders for p in Path(folder).rglob("*.py") if p.is_file()})
    if not files:
        raise LlmpyError(f"no .py files under {', '.join(map(str, folders))}")
    return files


def split(docs, every=VAL_EVERY):
    """(val, train) tokens: every `every`-th document to val, from the first on."""
    val = [t for i, d in enumerate(docs) if i % every == 0 for t in d]
    train = [t for i, d in enumerate(docs) if i % every for t in d]
    return val, train


def main():
    paths = sysconfig.get_paths()
    parser = argparse.ArgumentParser(description="Tokenize the .py files under some folders into llm.c shards.")
    parser.add_argument("folders", nargs="*", type=Path, default=sorted({Path(paths["stdlib"]), Path(paths["purelib"])}),
                        help="folders to read (default: this Python's standard library and site-packages)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "pycode", help="output folder")
    args = parser.parse_args()
    t0 = time.time()
    files = python_files(args.folders)
    with multiprocessing.Pool() as pool:
        docs = list(progress_bar(pool.imap(document, files, chunksize=32), total=len(files), desc="tokenizing",
                                 unit="file"))
    val, train = split(docs)
    write_datafile(args.out / "pycode_val.bin", val)
    write_datafile(args.out / "pycode_train.bin", train)
    print(f"{len(files)} files: val {len(val):,} tokens, train {len(train):,} tokens ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    run_main(main)
