"""Writing llm.c token shards (the format llmpy/dataloader.py reads)."""
import os
from pathlib import Path

import numpy as np

from llmpy import LlmpyError
from llmpy.dataloader import HEADER_INTS, MAGIC, VERSION


def write_datafile(path, tokens):
    path = Path(path)
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        bad = toks.min() if toks.min() < 0 else toks.max()
        raise LlmpyError(f"data file {path}: token {bad} does not fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = MAGIC, VERSION, toks.size
    print(f"writing {toks.size:,} tokens to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())
    os.replace(tmp, path)  # readers never see a half-written shard
