"""llm.c's gpt2_tokenizer.bin (magic 20240328), written by llmpy/tokenizer.py and read back."""
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmpy import LlmpyError
from llmpy.tokenizer import EOT, get_tokenizer, read_llmc_tokenizer, write_llmc_tokenizer


@pytest.fixture(scope="module")
def llmc_file(tmp_path_factory):
    return write_llmc_tokenizer(tmp_path_factory.mktemp("tok") / "gpt2_tokenizer.bin")


def test_header_is_llm_c_version_2(llmc_file):
    header = np.fromfile(llmc_file, dtype="<u4", count=256)
    assert list(header[:4]) == [20240328, 2, 50257, 50256] and not header[4:].any()


def test_every_token_reads_back_as_tiktokens_bytes(llmc_file):
    enc = get_tokenizer()
    tokens, eot = read_llmc_tokenizer(llmc_file)
    assert eot == EOT and len(tokens) == 50257
    assert tokens == [enc.decode_single_token_bytes(i) for i in range(50257)]
    assert tokens[EOT] == b"<|endoftext|>"


def test_tokens_of_a_text_decode_as_llm_c_does(llmc_file):
    """llm.c's sampler prints each token's bytes in turn: their concatenation is the text."""
    enc = get_tokenizer()
    text = "To be, or not to be: that is the question. café — 日本語 😀\n"
    tokens, _ = read_llmc_tokenizer(llmc_file)
    assert b"".join(tokens[t] for t in enc.encode_ordinary(text)).decode("utf-8") == text


def test_version_1_file_reads_with_eot_50256(tmp_path):
    header = np.zeros(256, dtype="<u4")
    header[:3] = 20240328, 1, 2
    path = tmp_path / "v1.bin"
    path.write_bytes(header.tobytes() + b"\x01a\x02bc")
    assert read_llmc_tokenizer(path) == ([b"a", b"bc"], 50256)


def test_command_line_writes_the_file(tmp_path):
    path = tmp_path / "gpt2_tokenizer.bin"
    r = subprocess.run([sys.executable, "-m", "llmpy.tokenizer", str(path)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert len(read_llmc_tokenizer(path)[0]) == 50257


def header_file(path, magic=20240328, version=2, n=2, body=b"\x01a\x02bc"):
    header = np.zeros(256, dtype="<u4")
    header[:4] = magic, version, n, 50256
    path.write_bytes(header.tobytes() + body)
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(magic=20240326), "not an llm.c tokenizer file"),
    (dict(version=3), "unsupported llm.c tokenizer file version 3"),
    (dict(body=b"\x01a\x05bc"), "token 1 of 2: truncated or corrupt"),
    (dict(body=b"\x01a\x02bcXY"), "2 bytes after the last of 2 tokens"),
])
def test_bad_file_is_a_one_line_error_naming_it(tmp_path, kwargs, message):
    path = header_file(tmp_path / "t.bin", **kwargs)
    with pytest.raises(LlmpyError, match=message) as e:
        read_llmc_tokenizer(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_file_shorter_than_header_is_an_error(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(struct.pack("<I", 20240328))
    with pytest.raises(LlmpyError, match="shorter than the 1024-byte header"):
        read_llmc_tokenizer(path)
