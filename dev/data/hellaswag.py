"""HellaSwag for `train_gpt2.py -h 1`: the official jsonl (github.com/rowanz/hellaswag) tokenized
into llm.c's eval-file format (llmpy/hellaswag.py describes it and scores it).

    python dev/data/hellaswag.py                      # download the val split, write
                                                      #   dev/data/hellaswag/hellaswag_val.bin
    python dev/data/hellaswag.py --jsonl FILE.jsonl   # from a local copy of the jsonl (offline)

One json object per line; the fields used are `ctx` (the context), `endings` (4 strings) and
`label` (the index of the right ending), e.g.
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
     "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", ..., "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", ..., "starts pulling up roofing on a roof."]}
As llm.c (and the paper's completion style) does, each ending is tokenized with a leading space,
after the context. The val split has 10,042 examples; OpenAI's GPT-2 124M scores acc_norm 29.4%.
"""
import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from llmpy import LlmpyError, run_main
from llmpy.hellaswag import START_EXAMPLE
from llmpy.llmc_file import EVAL, new_header
from llmpy.tokenizer import get_tokenizer

URLS = {split: f"https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
        for split in ("train", "val")}
OUT_DIR = Path(__file__).resolve().parent / "hellaswag"
NUM_ENDINGS = 4


def download(url, path):
    """Fetch url into path (through a temporary name); offline, a one-line LlmpyError that
    says what to fetch and how to hand it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    print(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError) as e:
        if tmp.exists():
            tmp.unlink()
        reason = getattr(e, "reason", None) or e
        raise LlmpyError(f"cannot download {url} ({reason}); fetch that file on a machine with internet "
                         f"and pass it with --jsonl PATH") from None


def read_jsonl(path):
    """The examples of a HellaSwag jsonl file, each checked: (ctx, endings, label) tuples."""
    examples = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LlmpyError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            ex = json.loads(line)
        except ValueError as e:
            raise LlmpyError(f"{where}: not a json object ({e})") from None
        if not isinstance(ex, dict) or not all(k in ex for k in ("ctx", "endings", "label")):
            raise LlmpyError(f"{where}: a HellaSwag example needs the fields ctx, endings and label")
        ctx, endings, label = ex["ctx"], ex["endings"], ex["label"]
        if not isinstance(ctx, str) or not ctx.strip():
            raise LlmpyError(f"{where}: ctx must be a non-empty string")
        if (not isinstance(endings, list) or len(endings) != NUM_ENDINGS
                or not all(isinstance(e, str) and e.strip() for e in endings)):
            raise LlmpyError(f"{where}: endings must be a list of {NUM_ENDINGS} non-empty strings")
        if isinstance(label, str) and label.isdigit():   # the official files store it as a number
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < NUM_ENDINGS:
            raise LlmpyError(f"{where}: label must be 0..{NUM_ENDINGS - 1}, got {ex['label']!r}")
        examples.append((ctx, endings, label))
    if not examples:
        raise LlmpyError(f"{path}: no examples")
    return examples


def render(example, encode):
    """(context tokens, [ending tokens]): each ending tokenized with its leading space."""
    ctx, endings, label = example
    return encode(ctx), [encode(" " + ending) for ending in endings], label


def write_evalfile(path, examples):
    """Write (context tokens, [ending tokens], label) examples in llm.c's eval-file format."""
    if len(examples) >= 2**16:
        raise LlmpyError(f"{path}: {len(examples)} examples; the format's uint16 index holds fewer than 65,536")
    stream, longest = [], 0
    for index, (context, endings, label) in enumerate(examples):
        example = [START_EXAMPLE, 0, index, label, len(endings), len(context), *context]
        for ending in endings:
            example += [len(ending), *ending]
        nbytes = 2 * len(example)
        if nbytes >= 2**16 or max(example[2:]) >= START_EXAMPLE:
            raise LlmpyError(f"{path}: example {index} does not fit the format ({nbytes} bytes)")
        example[1] = nbytes
        longest = max(longest, nbytes)
        stream += example
    header = new_header(EVAL, 1, len(examples), longest)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(np.array(stream, dtype="<u2").tobytes())
    os.replace(tmp, path)
    print(f"wrote {len(examples):,} examples to {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description="HellaSwag jsonl -> llm.c eval file")
    p.add_argument("--split", default="val", choices=sorted(URLS), help="which split to download")
    p.add_argument("--jsonl", help="a local HellaSwag jsonl file instead of the download")
    p.add_argument("--url", help="download from this address instead (a mirror of the jsonl)")
    p.add_argument("--out", help="the eval file to write (default dev/data/hellaswag/hellaswag_<split>.bin); "
                   "a download goes next to it")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else OUT_DIR / f"hellaswag_{args.split}.bin"
    jsonl = args.jsonl
    if jsonl is None:       # downloaded next to the eval file, once
        jsonl = out.parent / f"hellaswag_{args.split}.jsonl"
        if not jsonl.exists():
            download(args.url or URLS[args.split], jsonl)
    encode = get_tokenizer().encode_ordinary
    examples = [render(ex, encode) for ex in read_jsonl(jsonl)]
    write_evalfile(out, examples)


if __name__ == "__main__":
    run_main(main)
