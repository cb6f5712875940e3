"""dev/data/fineweb.py, dev/data/tinystories.py and the streaming shard writer in
llmpy/shards.py, on small local parquet/jsonl files in the datasets' schema (no network):
what the shards hold, resume after an interruption, and one-line errors."""
import itertools
import json
import os
import subprocess
import sys
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dev.data import fineweb, tinystories
from llmpy import shards
from llmpy import LlmpyError
from llmpy.dataloader import read_shard_header
from llmpy.tokenizer import EOT, get_tokenizer

REPO = Path(__file__).resolve().parents[1]


def documents(n=60, seed=0):
    """Texts of varied length, some longer than the tiny shards below."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "—", "café", "42", "\n", "Hello,", "world!"]
    return [f"Doc {i}: " + " ".join(rng.choice(words, size=rng.integers(1, 40))) for i in range(n)]


def write_parquet(path, texts, field="text"):
    pq.write_table(pa.table({field: texts, "id": [str(i) for i in range(len(texts))]}), path)
    return path


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "url": "https://example.com"}) + "\n" for t in texts))
    return path


def expected_tokens(texts, strip=False):
    enc = get_tokenizer()
    return [tok for t in texts for tok in [EOT] + enc.encode_ordinary(t.strip() if strip else t)]


def shard_tokens(path):
    n = read_shard_header(path)
    return np.fromfile(path, dtype="<u2", offset=1024, count=n)


def shard_files(folder, pattern="*.bin"):
    return sorted(folder.glob(pattern), key=lambda p: p.name.rsplit("_", 1)[1])


def all_tokens(folder, pattern="*.bin"):
    return np.concatenate([shard_tokens(p) for p in shard_files(folder, pattern)]).tolist()


def run_fineweb(tmp_path, local, shard_size=97, procs=2, out="out"):
    fineweb.main(["--local", *map(str, local), "-o", str(tmp_path / out), "-s", str(shard_size), "-p", str(procs)])
    return tmp_path / out


# --- what the shards hold

def test_shards_hold_eot_then_tokens_of_every_document_in_order(tmp_path):
    texts = documents()
    out = run_fineweb(tmp_path, [write_parquet(tmp_path / "fw.parquet", texts)])
    assert all_tokens(out) == expected_tokens(texts)


def test_first_shard_is_val_and_all_but_the_last_are_full(tmp_path):
    out = run_fineweb(tmp_path, [write_parquet(tmp_path / "fw.parquet", documents())])
    names = [p.name for p in shard_files(out)]
    assert names[0] == "fineweb_val_000000.bin" and names[1] == "fineweb_train_000001.bin"
    assert all(n.startswith("fineweb_train_") for n in names[1:]) and len(names) > 3
    sizes = [read_shard_header(p) for p in shard_files(out)]
    assert all(s == 97 for s in sizes[:-1]) and 0 < sizes[-1] <= 97


def test_jsonl_and_several_files_stream_in_the_order_given(tmp_path):
    a, b = documents(20, seed=1), documents(25, seed=2)
    out = run_fineweb(tmp_path, [write_jsonl(tmp_path / "b.jsonl", b), write_jsonl(tmp_path / "a.jsonl", a)])
    assert all_tokens(out) == expected_tokens(b + a)


def test_one_process_and_several_give_the_same_shards(tmp_path):
    local = [write_parquet(tmp_path / "fw.parquet", documents())]
    one, four = run_fineweb(tmp_path, local, procs=1, out="one"), run_fineweb(tmp_path, local, procs=4, out="four")
    assert [p.read_bytes() for p in shard_files(one)] == [p.read_bytes() for p in shard_files(four)]


def test_edu_type_names_shards_as_llm_c_does(tmp_path):
    fineweb.main(["-t", "edu", "--local", str(write_parquet(tmp_path / "fw.parquet", documents(5))),
                  "-o", str(tmp_path / "out"), "-s", "1000", "-p", "1"])
    assert [p.name for p in shard_files(tmp_path / "out")] == ["edu_fineweb_val_000000.bin",
                                                           "edu_fineweb_train_000001.bin"]


def test_input_smaller_than_a_shard_still_gets_a_train_shard(tmp_path, capsys):
    texts = documents(40)
    out = run_fineweb(tmp_path, [write_parquet(tmp_path / "fw.parquet", texts)], shard_size=10**6)
    val, train = (shard_tokens(p) for p in shard_files(out))
    assert [p.name for p in shard_files(out)] == ["fineweb_val_000000.bin", "fineweb_train_000001.bin"]
    assert np.concatenate([val, train]).tolist() == expected_tokens(texts)
    assert val[0] == EOT and train[0] == EOT                  # whole documents on each side
    assert 0.1 * (len(val) + len(train)) <= len(val) < 0.2 * (len(val) + len(train))
    assert "less than one shard: val takes the first" in capsys.readouterr().out


def test_tinystories_splits_go_to_their_own_shards_stripped(tmp_path):
    val = ["  Once upon a time there was a cat.\n", "The end. "]
    train = documents(30)
    tinystories.main(["--local_val", str(write_jsonl(tmp_path / "val.jsonl", val)),
                      "--local_train", str(write_parquet(tmp_path / "train.parquet", train)),
                      "-o", str(tmp_path / "ts"), "-s", "64", "-p", "2"])
    ts = tmp_path / "ts"
    assert [p.name for p in shard_files(ts, "tinystories_val_*.bin")] == ["tinystories_val_000000.bin"]
    assert all_tokens(ts, "tinystories_val_*.bin") == expected_tokens(val, strip=True)
    assert all_tokens(ts, "tinystories_train_*.bin") == expected_tokens(train, strip=True)
    assert shard_files(ts, "tinystories_train_*.bin")[0].name == "tinystories_train_000000.bin"


# --- resume

class Crash(Exception):
    pass


def crash_on_call(monkeypatch, name, n):
    """Make shards.<name> raise Crash on its n-th call (after n-1 calls went through)."""
    real, calls = getattr(shards, name), itertools.count(1)

    def wrapper(*args, **kwargs):
        if next(calls) == n:
            raise Crash(name)
        return real(*args, **kwargs)
    monkeypatch.setattr(shards, name, wrapper)


def run_until_crash(tmp_path, local, monkeypatch, where, n, **kwargs):
    """run_fineweb, stopped by a Crash on shards.<where>'s n-th call; the patch is undone."""
    with monkeypatch.context() as m:
        crash_on_call(m, where, n)
        with pytest.raises(Crash):
            run_fineweb(tmp_path, local, **kwargs)


@pytest.mark.parametrize("where", ["write_datafile", "write_progress"])
def test_interrupted_run_resumes_to_the_same_shards(tmp_path, monkeypatch, capsys, where):
    """A crash while writing shard 3 (or after it, before the progress file records it): the
    rerun continues where the progress file says and ends with the shards of an unbroken run."""
    local = [write_parquet(tmp_path / "fw.parquet", documents())]
    whole = run_fineweb(tmp_path, local, shard_size=41, out="whole")
    run_until_crash(tmp_path, local, monkeypatch, where, 4, shard_size=41, out="broken")
    state = json.loads((tmp_path / "broken" / "fineweb.progress.json").read_text())
    assert state["next_shard"] == 3 and not state["done"]
    assert state["doc_offset"] > 0  # the crash fell inside a document: the rerun starts mid-document
    capsys.readouterr()
    tokenized = []
    real_tokenize = shards.tokenize_documents
    monkeypatch.setattr(shards, "tokenize_documents", lambda texts: tokenized.extend(texts) or real_tokenize(texts))
    broken = run_fineweb(tmp_path, local, shard_size=41, procs=1, out="broken")
    assert f"resuming at shard 3, document {state['docs_done']}" in capsys.readouterr().out
    assert tokenized == documents()[state["docs_done"]:]  # skipped documents are not tokenized again
    assert [p.name for p in shard_files(broken)] == [p.name for p in shard_files(whole)]
    assert [p.read_bytes() for p in shard_files(broken)] == [p.read_bytes() for p in shard_files(whole)]


def test_complete_run_is_not_redone(tmp_path, capsys):
    local = [write_parquet(tmp_path / "fw.parquet", documents(10))]
    out = run_fineweb(tmp_path, local)
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    run_fineweb(tmp_path, local)
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_resume_with_another_shard_size_is_refused(tmp_path, monkeypatch):
    local = [write_parquet(tmp_path / "fw.parquet", documents())]
    run_until_crash(tmp_path, local, monkeypatch, "write_datafile", 2)
    with pytest.raises(LlmpyError, match="written for shard_size 97, this run has 50"):
        run_fineweb(tmp_path, local, shard_size=50)


def test_resume_with_a_shard_missing_is_refused(tmp_path, monkeypatch):
    local = [write_parquet(tmp_path / "fw.parquet", documents())]
    run_until_crash(tmp_path, local, monkeypatch, "write_datafile", 3)
    (tmp_path / "out" / "fineweb_val_000000.bin").unlink()
    with pytest.raises(LlmpyError, match="fineweb_val_000000.bin is missing"):
        run_fineweb(tmp_path, local)


# --- memory stays bounded while streaming

def test_bounded_imap_reads_the_stream_only_a_few_items_ahead():
    pulled = itertools.count()

    def endless():
        while True:
            next(pulled)
            yield 1
    with ThreadPool(2) as pool:
        results = shards.bounded_imap(pool, lambda x: x, endless(), max_pending=4)
        assert next(results) == 1
        time.sleep(0.2)  # plain imap would pull thousands of items meanwhile
        assert next(pulled) <= 4 + 2
        results.close()


# --- bad input and no network: one line, naming the dataset and what to do

def test_unreachable_dataset_names_it_and_the_local_option(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb-edu' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LlmpyError) as e:
        fineweb.main(["-t", "edu", "-v", "100B", "-o", str(tmp_path / "out")])
    msg = str(e.value)
    assert "\n" not in msg and "HuggingFaceFW/fineweb-edu (sample-100BT)" in msg and "ConnectionError" in msg
    assert "https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu" in msg and "--local FILE" in msg
    assert "sample/100BT/*" in msg and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, dataset, option", [
    ("fineweb.py", "HuggingFaceFW/fineweb (sample-10BT)", "--local FILE"),
    ("tinystories.py", "roneneldan/TinyStories split validation", "--local_val FILE"),
])
def test_script_offline_prints_one_error_line_and_no_traceback(tmp_path, script, dataset, option):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, str(REPO / "dev" / "data" / script), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot stream Hugging Face dataset {dataset}") and option in last


def test_connection_lost_mid_stream_keeps_complete_shards_and_says_rerun(tmp_path, monkeypatch):
    texts = documents(300)  # the connection drops at document 200, after three batches of 64

    class FlakyStream:
        def __init__(self, skip=0):
            self.skip_n = skip

        def skip(self, n):
            return FlakyStream(self.skip_n + n)

        def __iter__(self):
            for t in texts[self.skip_n:200]:
                yield {"text": t}
            raise ConnectionError("Connection reset by peer")
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: FlakyStream())
    with pytest.raises(LlmpyError, match="Connection reset by peer.*a rerun resumes after the last complete shard"):
        fineweb.main(["-o", str(tmp_path / "out"), "-s", "97", "-p", "2"])
    state = json.loads((tmp_path / "out" / "fineweb.progress.json").read_text())
    assert state["next_shard"] > 0 and not state["done"]
    assert all_tokens(tmp_path / "out") == expected_tokens(texts)[:97 * state["next_shard"]]


def test_document_without_a_text_field_is_an_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "fw.jsonl", ["a", "b"], field="content")
    with pytest.raises(LlmpyError, match=r"document 0 has no 'text' text \(fields: content, url\)") as e:
        run_fineweb(tmp_path, [path])
    assert str(path) in str(e.value)


@pytest.mark.parametrize("name, message", [("none.parquet", "no such file"), ("fw.csv", "expected a .parquet, .jsonl or .json")])
def test_bad_local_file_is_an_error(tmp_path, name, message):
    if name.endswith(".csv"):
        (tmp_path / name).write_text("text\na\n")
    with pytest.raises(LlmpyError, match=message):
        run_fineweb(tmp_path, [tmp_path / name])


def test_tinystories_needs_both_local_splits(tmp_path):
    with pytest.raises(LlmpyError, match="--local_val and --local_train go together"):
        tinystories.main(["--local_val", str(write_jsonl(tmp_path / "v.jsonl", ["x"])), "-o", str(tmp_path / "ts")])
