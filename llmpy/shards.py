"""Writing llm.c token shards (the format llmpy/dataloader.py reads), and streaming large datasets
into them: tokenized in parallel processes, in fixed-size shards, resumable."""
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np

from llmpy import LlmpyError
from llmpy.llmc_file import SHARD, new_header
from llmpy.progress import counter


def write_datafile(path, tokens):
    path = Path(path)
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        bad = toks.min() if toks.min() < 0 else toks.max()
        raise LlmpyError(f"data file {path}: token {bad} does not fit in uint16")
    header = new_header(SHARD, 1, toks.size)
    print(f"writing {toks.size:,} tokens to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())
    os.replace(tmp, path)  # readers never see a half-written shard


# -----------------------------------------------------------------------------
# Large datasets: documents streamed in, tokenized in parallel, written as fixed-size shards,
# resumable. llm.c's fineweb.py convention: EOT before each document; a document that does not
# fit in the current shard continues in the next one.
#
# Resume: a shard is complete once its file has its final name (write_datafile renames a full
# temporary file into place). After each shard, <out>/<run>.progress.json (also renamed into
# place) records the next shard's index and where in the document stream it starts: the number
# of documents already wholly written and how many tokens of the next one are. A rerun skips
# that many documents (streamed past, not tokenized) and drops those tokens of the next one.
# The final, shorter shard marks the run done.

def shard_name(prefix, split, index):
    return f"{prefix}_{split}_{index:06d}.bin"


def network_error(what, exc, offline_hint):
    """The one-line LlmpyError for a dataset that cannot be fetched: what, why, what to do offline."""
    why = (str(exc).strip().splitlines() or [""])[0][:200]
    return LlmpyError(f"cannot stream {what} ({type(exc).__name__}: {why}); {offline_hint}")


def tokenize_documents(texts):
    """[EOT] + GPT-2 tokens of each text, concatenated: (uint16 tokens, per-document lengths)."""
    from llmpy.tokenizer import EOT, get_tokenizer
    enc = get_tokenizer()
    docs = [enc.encode_ordinary(t) for t in texts]
    lengths = np.array([len(d) + 1 for d in docs], dtype=np.int64)
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)  # GPT-2's 50257 ids fit in uint16
    pos = 0
    for d in docs:
        tokens[pos] = EOT
        tokens[pos + 1:pos + 1 + len(d)] = d
        pos += len(d) + 1
    return tokens, lengths


def batched(items, n):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def bounded_imap(pool, fn, items, max_pending):
    """pool.imap(fn, items) that reads `items` no more than max_pending ahead of the results
    (plain imap drains a stream into its task queue as fast as it can: memory without bound)."""
    slots = threading.Semaphore(max_pending)
    stop = threading.Event()

    def gated():
        for item in items:
            slots.acquire()
            if stop.is_set():
                return
            yield item
    try:
        for result in pool.imap(fn, gated()):
            slots.release()
            yield result
    finally:
        stop.set()
        slots.release()  # wake the feeder if it is waiting for a slot


class ShardWriter:
    """Cuts a stream of tokenized documents into shards of shard_size tokens, keeping
    `state` (see above) current on disk after every shard."""

    def __init__(self, out_dir, prefix, split_of, shard_size, state, state_path):
        self.out_dir, self.prefix, self.split_of = Path(out_dir), prefix, split_of
        self.shard_size, self.state, self.state_path = shard_size, state, state_path
        self.buffer = np.empty(shard_size, dtype=np.uint16)
        self.fill = 0
        self.doc = state["docs_done"]  # index in the stream of the document being added

    def add(self, tokens, start=0):
        """Add one document's tokens from tokens[start] on (start > 0 only for the document a
        resumed run continues)."""
        pos = start
        while pos < len(tokens):
            n = min(self.shard_size - self.fill, len(tokens) - pos)
            self.buffer[self.fill:self.fill + n] = tokens[pos:pos + n]
            self.fill += n
            pos += n
            if self.fill == self.shard_size:
                done = pos == len(tokens)
                self._write(docs_done=self.doc + done, doc_offset=0 if done else pos)
        self.doc += 1

    def finish(self):
        """Write what is left as the last, shorter shard and mark the run done. An input smaller
        than one shard, where the first shard is val and the rest train, is split so that train
        gets a shard too (split_small_input)."""
        if self.fill and self.state["next_shard"] == 0 and self.split_of(0) != self.split_of(1):
            self.split_small_input()
        elif self.fill:
            self._write(docs_done=self.doc, doc_offset=0)
        self.state.update(docs_done=self.doc, doc_offset=0, done=True)
        write_progress(self.state_path, self.state)

    def split_small_input(self, val_fraction=0.1):
        """Shard 0 (val) takes the documents of the first `val_fraction` of the tokens, shard 1
        (train) the rest: the whole input had fit in the first shard, which would have left
        nothing to train on."""
        from llmpy.tokenizer import EOT
        tokens = self.buffer[:self.fill]
        starts = np.flatnonzero(tokens == EOT)
        later = starts[starts >= max(1, int(val_fraction * len(tokens)))]
        cut = int(later[0]) if len(later) else max(1, int(val_fraction * len(tokens)))
        print(f"{self.prefix}: the input is {len(tokens):,} tokens, less than one shard: val takes the "
              f"first {cut:,} (whole documents, ~{val_fraction:.0%}), train the other {len(tokens) - cut:,}")
        for index, part in ((0, tokens[:cut]), (1, tokens[cut:])):
            write_datafile(self.out_dir / shard_name(self.prefix, self.split_of(index), index), part)
        self.fill = 0
        self.state.update(next_shard=2, docs_done=self.doc, doc_offset=0)

    def _write(self, docs_done, doc_offset):
        index = self.state["next_shard"]
        write_datafile(self.out_dir / shard_name(self.prefix, self.split_of(index), index), self.buffer[:self.fill])
        self.fill = 0
        self.state.update(next_shard=index + 1, docs_done=docs_done, doc_offset=doc_offset)
        write_progress(self.state_path, self.state)


def write_progress(path, state):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


def read_progress(path, source, shard_size, prefix, split_of):
    """The run's saved state, checked against this run's source and shard size and the shard
    files on disk; a fresh state where there is none."""
    fresh = dict(source=source, shard_size=shard_size, next_shard=0, docs_done=0, doc_offset=0, done=False)
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
        if set(state) != set(fresh):
            raise ValueError(f"keys {sorted(state)}")
    except (OSError, ValueError) as e:
        raise LlmpyError(f"{path}: unreadable progress file ({e}); delete it to start over") from None
    for key in ("source", "shard_size"):
        if state[key] != fresh[key]:
            raise LlmpyError(f"{path}: written for {key} {state[key]!r}, this run has {fresh[key]!r}; "
                             "use another output folder, or delete the progress file and the shards to start over")
    for index in range(state["next_shard"]):
        shard = path.parent / shard_name(prefix, split_of(index), index)
        if not shard.exists():
            raise LlmpyError(f"{path}: says shard {index} is written, but {shard} is missing; "
                             "delete the progress file and the shards to start over")
    return state


def tokenize_to_shards(open_texts, *, out_dir, prefix, run, source, shard_size, split_of=lambda i: "train",
                       procs=1, batch_docs=64):
    """Tokenize the documents `open_texts(skip)` yields (the stream's texts from document `skip`
    on) into out_dir/<prefix>_<split_of(index)>_<index:06d>.bin shards of shard_size tokens,
    in `procs` processes, resuming where <out_dir>/<run>.progress.json says a previous run
    stopped. Returns the final state."""
    if shard_size < 1:
        raise LlmpyError(f"shard size {shard_size} must be positive")
    out_dir = Path(out_dir)  # created with the first shard
    state_path = out_dir / f"{run}.progress.json"
    state = read_progress(state_path, source, shard_size, prefix, split_of)
    if state["done"]:
        print(f"{run}: already complete ({state['next_shard']} shards, {state['docs_done']:,} documents in {out_dir}); skipping")
        return state
    if state["next_shard"]:
        print(f"{run}: resuming at shard {state['next_shard']}, document {state['docs_done']:,} "
              f"(+{state['doc_offset']} tokens)")
    writer = ShardWriter(out_dir, prefix, split_of, shard_size, state, state_path)
    start = state["doc_offset"]
    batches = batched(open_texts(state["docs_done"]), batch_docs)
    t0 = time.time()
    if procs > 1:
        from llmpy.tokenizer import get_tokenizer
        get_tokenizer()  # load the BPE ranks once, before the workers fork
        pool = multiprocessing.Pool(procs)
        results = bounded_imap(pool, tokenize_documents, batches, max_pending=4 * procs)
    else:
        pool = None
        results = map(tokenize_documents, batches)
    bar = counter(desc=f"{run} tokens", unit="tok")
    try:
        for tokens, lengths in results:
            for end, length in zip(np.cumsum(lengths), lengths):
                writer.add(tokens[end - length:end], start)
                start = 0
            bar.set_description_str(f"{run} shard {state['next_shard']}")
            bar.update(int(lengths.sum()))
    finally:
        bar.close()
        if pool is not None:
            results.close()  # first: terminate() waits for the feeder, which may wait for a slot
            pool.terminate()
            pool.join()
    writer.finish()
    print(f"{run}: {state['next_shard']} shards, {state['docs_done']:,} documents ({time.time() - t0:.1f}s)")
    return state


# -----------------------------------------------------------------------------
# documents from the `datasets` library, streamed: a Hugging Face dataset, or local files in its schema

LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def text_stream(dataset, config=None, split="train", local=None, field="text", strip=False, offline_hint=""):
    """open_texts(skip) for tokenize_to_shards: the `field` of each document of `dataset`
    (config, split), streamed by `datasets.load_dataset(..., streaming=True)`, or of the local
    parquet/jsonl files `local` (a list; read through `datasets` too, in the same schema).
    A dataset that cannot be reached is a one-line LlmpyError naming it and `offline_hint`."""
    if local:
        files = [Path(p) for p in local]
        for p in files:
            if not p.is_file():
                raise LlmpyError(f"--local {p}: no such file")
            if p.suffix not in LOCAL_FORMATS:
                raise LlmpyError(f"--local {p}: expected a .parquet, .jsonl or .json file")
        kinds = {LOCAL_FORMATS[p.suffix] for p in files}
        if len(kinds) > 1:
            raise LlmpyError(f"--local: mixed file types {sorted(kinds)}; give files of one type")
        what = f"local file{'s' if len(files) > 1 else ''} {', '.join(map(str, files))}"
        hint = f"check that it is {kinds.pop()} with a {field!r} field per document" if len(files) == 1 else "check them"
    else:
        what = f"Hugging Face dataset {dataset}" + (f" ({config})" if config else "") + f" split {split}"
        hint = offline_hint

    def load():
        try:
            from datasets import load_dataset
        except ImportError:
            raise LlmpyError("the `datasets` package is missing: pip install -r requirements.txt") from None
        try:
            if local:
                fmt = LOCAL_FORMATS[files[0].suffix]
                return load_dataset(fmt, data_files=[str(p) for p in files], split="train", streaming=True)
            return load_dataset(dataset, name=config, split=split, streaming=True)
        except Exception as e:  # offline: ConnectionError after retries; anything else is no better explained by a trace
            raise network_error(what, e, hint) from None

    def open_texts(skip):
        ds = load()
        if skip:
            ds = ds.skip(skip)
        it = iter(ds)
        index = skip
        while True:
            try:
                row = next(it)
            except StopIteration:
                return
            except Exception as e:  # a connection lost mid-stream, a corrupt file
                raise network_error(what, e, hint + "; a rerun resumes after the last complete shard") from None
            text = row.get(field) if isinstance(row, dict) else None
            if not isinstance(text, str):
                fields = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise LlmpyError(f"{what}: document {index} has no {field!r} text (fields: {fields})")
            yield text.strip() if strip else text
            index += 1

    return open_texts
