"""GPT-2's BPE tokenizer through tiktoken, with a source that needs only PyPI.

tiktoken.get_encoding("gpt2") downloads its ranks from openaipublic.blob.core.windows.net; where
only PyPI is reachable, the same ranks come from whisper/assets/gpt2.tiktoken in the
openai-whisper sdist. Either way the ranks are kept in <cache>/gpt2.tiktoken.
"""
import base64
import functools
import hashlib
import os
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tiktoken

from llmpy import LlmpyError, run_main
from llmpy.fetch import cache_dir, pip_download_sdist

EOT = 50256
BPE_FILE = "gpt2.tiktoken"
BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER_SDIST = "openai-whisper==20250625"
# tiktoken's r50k_pat_str: GPT-2's pre-tokenizer regex, shared by the gpt2 and r50k_base encodings
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@functools.cache
def get_tokenizer():
    """The GPT-2 tiktoken.Encoding (encode_ordinary, decode, eot_token 50256, n_vocab 50257)."""
    return load_tokenizer(cache_dir())


def load_tokenizer(cache):
    """Build the encoding from cache/gpt2.tiktoken, else tiktoken's download, else PyPI."""
    path = Path(cache) / BPE_FILE
    if path.exists():
        return _encoding(_read_checked(path.read_bytes(), path))
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # offline this is requests' ConnectionError; any failure sends us to PyPI
        online_error = type(e).__name__
    try:
        data = _bpe_from_whisper_sdist()
    except LlmpyError as e:
        raise LlmpyError(f"no GPT-2 BPE ranks: {path} is missing, tiktoken.get_encoding('gpt2') failed "
                         f"({online_error}), and {e}; offline, copy {BPE_FILE} (whisper/assets/ in the "
                         f"{WHISPER_SDIST} sdist, sha256 {BPE_SHA256}) into {path.parent}/ or set LLMPY_CACHE") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a crash mid-write must not leave a truncated file that looks cached
    return _encoding(data)


def _bpe_from_whisper_sdist():
    with tempfile.TemporaryDirectory() as tmp:
        sdist = pip_download_sdist(WHISPER_SDIST, tmp)
        with tarfile.open(sdist) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith("/whisper/assets/" + BPE_FILE)), None)
            if member is None:
                raise LlmpyError(f"{sdist.name} holds no whisper/assets/{BPE_FILE}")
            return _read_checked(tf.extractfile(member).read(), f"{sdist.name}:{member.name}")


def _read_checked(data, where):
    sha = hashlib.sha256(data).hexdigest()
    if sha != BPE_SHA256:
        raise LlmpyError(f"GPT-2 BPE file {where}: sha256 {sha} (expected {BPE_SHA256}); delete it or replace it with the right file")
    return data


def _encoding(data):
    # parsed here rather than by tiktoken.load.load_tiktoken_bpe, which would copy a local file
    # into its own cache in /tmp; the format is the same: "<base64 token> <rank>" per line
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT})


# -----------------------------------------------------------------------------
# llm.c's tokenizer file (gpt2_tokenizer.bin), which its C samplers decode tokens with:
#     uint32[256] header: [0] 20240328, [1] version 2, [2] vocab size (50257), [3] EOT id (50256)
#     then for each token id in order: uint8 length, then that many bytes (the token's raw bytes)
# Version 1 (llm.c's first) has no [3]; its EOT is 50256.

LLMC_TOKENIZER_MAGIC = 20240328
LLMC_TOKENIZER_VERSION = 2


def write_llmc_tokenizer(path, enc=None):
    """Write llm.c's gpt2_tokenizer.bin for `enc` (default: GPT-2's) to path, atomically."""
    enc = enc or get_tokenizer()
    n = enc.n_vocab
    header = np.zeros(256, dtype="<u4")
    header[:4] = LLMC_TOKENIZER_MAGIC, LLMC_TOKENIZER_VERSION, n, enc.eot_token
    parts = [header.tobytes()]
    for i in range(n):
        b = enc.decode_single_token_bytes(i)
        if not 0 < len(b) < 256:
            raise LlmpyError(f"token {i} is {len(b)} bytes; llm.c's tokenizer file holds 1..255")
        parts += [struct.pack("<B", len(b)), b]
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(b"".join(parts))
    os.replace(tmp, path)
    return path


def read_llmc_tokenizer(path):
    """Read llm.c's tokenizer file (version 1 or 2). Returns (list of token bytes, EOT id)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LlmpyError(f"{path}: cannot read llm.c tokenizer file: {e.strerror}") from None
    if len(data) < 1024:
        raise LlmpyError(f"{path}: {len(data)} bytes is shorter than the 1024-byte header of an llm.c tokenizer file")
    header = np.frombuffer(data, dtype="<u4", count=256)
    if header[0] != LLMC_TOKENIZER_MAGIC:
        raise LlmpyError(f"{path}: not an llm.c tokenizer file (magic number {header[0]}, expected {LLMC_TOKENIZER_MAGIC})")
    version, n = int(header[1]), int(header[2])
    if version not in (1, 2):
        raise LlmpyError(f"{path}: unsupported llm.c tokenizer file version {version} (supported: 1, 2)")
    eot = int(header[3]) if version == 2 else EOT
    tokens, pos = [], 1024
    for i in range(n):
        length = data[pos] if pos < len(data) else 0
        if length == 0 or pos + 1 + length > len(data):
            raise LlmpyError(f"{path}: token {i} of {n}: truncated or corrupt (zero length or past the end of the file)")
        tokens.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos != len(data):
        raise LlmpyError(f"{path}: {len(data) - pos} bytes after the last of {n} tokens; corrupt")
    return tokens, eot


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m llmpy.tokenizer",
                                description="Write llm.c's gpt2_tokenizer.bin, with which llm.c's C code decodes tokens.")
    p.add_argument("path", nargs="?", default="gpt2_tokenizer.bin", help="output file (default: gpt2_tokenizer.bin)")
    args = p.parse_args(argv)
    print(f"wrote {write_llmc_tokenizer(args.path)}")


if __name__ == "__main__":
    run_main(main)
