"""Token shards in llm.c's format and the loader that cuts them into per-rank batches.

A shard is a 256-int32 header (magic 20240520, version 1, token count) followed by the tokens
as uint16, all little-endian. As in llm.c, every step reads one round of world*B*T tokens (+1
for the last target) from the current shard: rank r takes the r-th B*T slice of the round.

uint16 holds ids up to 65,535, beyond any GPT-2 vocabulary: an id >= V would index past the
embedding's real rows (into padding, or on the GPU into other tensors), so every shard's ids
are checked against the model's V when the loader opens it.
"""
import glob
import os

import numpy as np

from llmpy import LlmpyError

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256
HEADER_BYTES = HEADER_INTS * 4


def read_shard_header(path):
    """Check a shard's header against its size and return its token count."""
    if not os.path.isfile(path):
        raise LlmpyError(f"data file {path}: not found")
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise LlmpyError(f"data file {path}: {size} bytes, shorter than the {HEADER_BYTES}-byte header (truncated?)")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise LlmpyError(f"data file {path}: bad magic {header[0]} (expected {MAGIC}; is this an llm.c token shard?)")
    if header[1] != VERSION:
        raise LlmpyError(f"data file {path}: unsupported version {header[1]} (expected {VERSION})")
    ntok = int(header[2])
    if ntok < 0 or HEADER_BYTES + 2 * ntok != size:
        raise LlmpyError(f"data file {path}: header says {ntok:,} tokens ({HEADER_BYTES + 2 * ntok:,} bytes) "
                         f"but the file has {size:,} bytes (truncated?)")
    return ntok


def open_shard(path, vocab_size):
    """A shard's tokens as a read-only uint16 memmap (the file is paged in as batches are read),
    after checking that every id is below vocab_size."""
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(read_shard_header(path),))
    check_token_ids(tokens, vocab_size, f"data file {path}")
    return tokens


def check_token_ids(tokens, vocab_size, where):
    """One pass (a max) over the ids; the first bad one is looked for only when there is one."""
    if tokens.size and int(tokens.max()) >= vocab_size:
        pos = int(np.argmax(tokens >= vocab_size))
        raise LlmpyError(f"{where}: token id {int(tokens[pos])} at position {pos:,} is not in the model's "
                         f"vocabulary of {vocab_size} (ids 0-{vocab_size - 1})")


class DataLoader:
    def __init__(self, pattern, B, T, rank=0, world=1, *, vocab_size):
        if B < 1 or T < 1 or not 0 <= rank < world:
            raise LlmpyError(f"data loader: need B >= 1, T >= 1 and 0 <= rank < world, got B={B} T={T} rank={rank} world={world}")
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise LlmpyError(f"data files {pattern}: no file matches")
        self.pattern, self.B, self.T, self.rank, self.world = pattern, B, T, rank, world
        self.vocab_size = vocab_size
        self.round = B * T * world  # tokens all ranks consume in one step
        self.ntoks = [read_shard_header(f) for f in self.files]
        for f, n in zip(self.files, self.ntoks):
            if n < self.round + 1:
                raise LlmpyError(f"data file {f}: {n:,} tokens, fewer than B*T*world+1 = {B}*{T}*{world}+1 = {self.round + 1:,}")
        self.num_tokens = sum(self.ntoks)
        self.shard = None
        self.reset()

    def reset(self):
        self._set(0, 0)

    def _set(self, shard, pos):
        # pos is where the current round starts, the same on every rank, so all ranks move to
        # the next shard at the same step
        if shard != self.shard:
            self.tokens = open_shard(self.files[shard], self.vocab_size)
        self.shard, self.pos = shard, pos

    def next_batch(self):
        start = self.pos + self.B * self.T * self.rank
        buf = np.asarray(self.tokens[start:start + self.B * self.T + 1], dtype=np.int32)
        inputs, targets = buf[:-1].reshape(self.B, self.T), buf[1:].reshape(self.B, self.T)
        pos = self.pos + self.round
        if pos + self.round + 1 > self.ntoks[self.shard]:
            self._set((self.shard + 1) % len(self.files), 0)
        else:
            self.pos = pos
        return inputs, targets

    def state(self):
        return {"shard": self.shard, "pos": self.pos}

    def load_state(self, d):
        shard, pos = int(d.get("shard", -1)), int(d.get("pos", -1))
        # a position off the round grid means the state came from a run with another B*T*world
        if not (0 <= shard < len(self.files) and 0 <= pos and pos % self.round == 0 and pos + self.round + 1 <= self.ntoks[shard]):
            raise LlmpyError(f"data loader state {d} does not fit {self.pattern} with B={self.B} T={self.T} world={self.world}")
        self._set(shard, pos)
