"""The header that llm.c's binary files open with, read and checked for every kind in one place.

Each file is 256 little-endian int32 (1024 bytes) and then its body: [0] a magic number naming
the kind, [1] the format's version, then the kind's own fields (checkpoint.py, dataloader.py and
hellaswag.py give them). llm.c's tokenizer file has the same header in uint32 but reads its
whole body as bytes (tokenizer.py).
"""
import os
from dataclasses import dataclass

import numpy as np

from llmpy import LlmpyError

HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS


@dataclass(frozen=True)
class FileKind:
    name: str        # what the file is, in errors: "not an llm.c model file"
    label: str       # what errors call its path ("data file x.bin: ..."); "" for the path alone
    magic: int
    versions: dict   # each version read -> what it holds ("" where one version is all there is)

    def where(self, path):
        return f"{self.label} {path}" if self.label else str(path)


MODEL = FileKind("llm.c model file", "", 20240326, {3: "fp32", 5: "bf16"})
STATE = FileKind("llmpy state file", "", 20240527, {1: ""})
SHARD = FileKind("llm.c token shard", "data file", 20240520, {1: ""})
EVAL = FileKind("llm.c eval file", "eval file", 20240522, {1: ""})


def new_header(kind, version, *fields):
    """A header of `kind`: its magic, `version`, then `fields` from [2] on, the rest 0."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:2 + len(fields)] = [kind.magic, version, *fields]
    return header


def read_header(path, kind):
    """(int32 header, file size) of an llm.c file of `kind`, after checking that the file holds
    the header and that its magic and version are the kind's; else one line naming the file."""
    where = kind.where(path)
    try:
        size = os.path.getsize(path)
        if size < HEADER_BYTES:
            raise LlmpyError(f"{where}: {size} bytes, shorter than the {HEADER_BYTES}-byte header "
                             f"of an {kind.name} (truncated?)")
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        why = f"not found ({e.strerror})" if isinstance(e, FileNotFoundError) else e.strerror
        raise LlmpyError(f"{where}: cannot read {kind.name}: {why}") from None
    if header[0] != kind.magic:
        raise LlmpyError(f"{where}: not an {kind.name} (bad magic {header[0]}, expected {kind.magic})")
    if header[1] not in kind.versions:
        supported = ", ".join(f"{v} = {what}" if what else str(v) for v, what in kind.versions.items())
        raise LlmpyError(f"{where}: unsupported version {header[1]} of an {kind.name} (supported: {supported})")
    return header, size


def check_size(path, kind, size, expected, what):
    """The file's size against the `expected` bytes its header's fields (`what`) add up to."""
    if size != expected:
        raise LlmpyError(f"{kind.where(path)}: file is {size} bytes but its header says {what}, which "
                         f"needs {expected} bytes; truncated or corrupt")
