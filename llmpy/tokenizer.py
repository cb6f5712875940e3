"""GPT-2's BPE tokenizer through tiktoken, with a source that needs only PyPI.

tiktoken.get_encoding("gpt2") downloads its ranks from openaipublic.blob.core.windows.net; where
only PyPI is reachable, the same ranks come from whisper/assets/gpt2.tiktoken in the
openai-whisper sdist. Either way the ranks are kept in <cache>/gpt2.tiktoken.
"""
import base64
import functools
import hashlib
import os
import tarfile
import tempfile
from pathlib import Path

import tiktoken

from llmpy import LlmpyError
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
