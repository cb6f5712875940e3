"""Token shards in llm.c's format and the loader that cuts them into per-rank batches.

A shard is a 256-int32 header (magic 20240520, version 1, token count) followed by the tokens
as uint16, all little-endian. As in llm.c, every step reads one sample of world*B*T tokens (+1
for the last target) from the current shard: rank r takes the r-th B*T slice of the sample.
The samples come in file order or, as llm.c's training loader reads them, shuffled.

uint16 holds ids up to 65,535, beyond any GPT-2 vocabulary: an id >= V would index past the
embedding's real rows (into padding, or on the GPU into other tensors), so every shard's ids
are checked against the model's V when the loader opens it.
"""
import glob

import numpy as np

from llmpy import LlmpyError
from llmpy.llmc_file import HEADER_BYTES, SHARD, check_size, read_header
from llmpy.rand import MersenneTwister, random_permutation

SHUFFLE_SEED = 42     # llm.c's, plus the process's rank


def read_shard_header(path):
    """Check a shard's header against its size and return its token count."""
    header, size = read_header(path, SHARD)
    ntok = int(header[2])
    check_size(path, SHARD, size, HEADER_BYTES + 2 * ntok, f"{ntok:,} tokens")
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
    """Batches of B*T tokens (+1 for the last target) for this rank. A shard holds
    (tokens - 1) // (B*T*world) samples of B*T*world tokens; rank r reads the r-th B*T slice of
    each. In file order the samples follow each other and the shards come in sorted name
    order, over and over. Shuffled (llm.c's train_gpt2.cu), each rank draws from its own
    Mersenne Twister seeded with SHUFFLE_SEED + rank: at the start of every epoch the shard
    order is permuted again (the previous epoch's order, not the sorted one), and each time a
    shard is opened its samples are permuted afresh."""

    def __init__(self, pattern, B, T, rank=0, world=1, shuffle=False, *, vocab_size):
        if B < 1 or T < 1 or not 0 <= rank < world:
            raise LlmpyError(f"data loader: need B >= 1, T >= 1 and 0 <= rank < world, got B={B} T={T} rank={rank} world={world}")
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise LlmpyError(f"data files {pattern}: no file matches")
        self.pattern, self.B, self.T, self.rank, self.world = pattern, B, T, rank, world
        self.vocab_size = vocab_size
        self.round = B * T * world  # tokens all ranks consume in one step: one sample
        self.ntoks = [read_shard_header(f) for f in self.files]
        for f, n in zip(self.files, self.ntoks):
            if n < self.round + 1:
                raise LlmpyError(f"data file {f}: {n:,} tokens, fewer than B*T*world+1 = {B}*{T}*{world}+1 = {self.round + 1:,}")
        self.num_tokens = sum(self.ntoks)
        self.shuffle = shuffle
        self.shard_order = list(range(len(self.files)))
        self.rng = MersenneTwister(SHUFFLE_SEED + rank) if shuffle else None
        self.file = None
        self.reset()

    def reset(self):
        """Back to the first shard; shuffled, a new epoch (the shard order permuted again)."""
        if self.shuffle:
            random_permutation(self.shard_order, self.rng)
        self._open(0)

    def _open(self, shard, sample=0):
        """Make `shard` (an index into this epoch's shard order) the current one, at `sample`."""
        file = self.shard_order[shard]
        if file != self.file:
            self.tokens = open_shard(self.files[file], self.vocab_size)
        self.shard, self.file, self.sample = shard, file, sample
        self.num_samples = self.num_samples_of(file)
        self.sample_order = None
        if self.shuffle:
            # state() saves the generator as it was before this shard's draw, so that a resumed
            # loader draws the same sample order and leaves the generator where this one does
            self.rng_before_samples = self.rng.state()
            self.sample_order = random_permutation(list(range(self.num_samples)), self.rng)

    def next_batch(self):
        i = self.sample_order[self.sample] if self.shuffle else self.sample
        start = i * self.round + self.B * self.T * self.rank
        buf = np.asarray(self.tokens[start:start + self.B * self.T + 1], dtype=np.int32)
        inputs, targets = buf[:-1].reshape(self.B, self.T), buf[1:].reshape(self.B, self.T)
        self.sample += 1
        if self.sample == self.num_samples:
            if self.shard == len(self.files) - 1:
                self.reset()
            else:
                self._open(self.shard + 1)
        return inputs, targets

    def state(self):
        """JSON-able: in file order the shard and the token offset of the next sample (the
        form checkpoints had before shuffling existed); shuffled also the epoch's shard order
        and the generator's state before this shard's sample order was drawn."""
        if not self.shuffle:
            return {"shard": self.shard, "pos": self.sample * self.round}
        return {"shard": self.shard, "sample": self.sample, "tokens_per_sample": self.round,
                "shard_order": list(self.shard_order), "rng": self.rng_before_samples}

    def load_state(self, d):
        where = f"does not fit {self.pattern} with B={self.B} T={self.T} world={self.world}"
        if self.shuffle != ("shard_order" in d):
            raise LlmpyError(f"data loader state: it reads the data {'shuffled' if 'shard_order' in d else 'in file order'}, "
                             f"this loader {'shuffled' if self.shuffle else 'in file order'}")
        shard = d.get("shard", -1)
        if not (type(shard) is int and 0 <= shard < len(self.files)):
            raise LlmpyError(f"data loader state: shard {shard} {where}")
        if not self.shuffle:
            pos = d.get("pos", -1)
            # a position off the sample grid means the state came from a run with another B*T*world
            ok = type(pos) is int and 0 <= pos and pos % self.round == 0 and pos // self.round < self.num_samples_of(shard)
            if not ok:
                raise LlmpyError(f"data loader state: shard {shard} position {pos} {where}")
            self._open(shard, pos // self.round)
            return
        order, sample = d.get("shard_order"), d.get("sample", -1)
        if d.get("tokens_per_sample") != self.round or not isinstance(order, list) \
                or not all(type(f) is int for f in order) or sorted(order) != list(range(len(self.files))):
            raise LlmpyError(f"data loader state: tokens per sample {d.get('tokens_per_sample')}, "
                             f"shard order of {len(order) if isinstance(order, list) else '?'} shards {where}")
        if not (type(sample) is int and 0 <= sample < self.num_samples_of(order[shard])):
            raise LlmpyError(f"data loader state: sample {sample} of shard {shard} {where}")
        try:
            self.rng.set_state(d.get("rng"))
        except (ValueError, KeyError, TypeError):
            raise LlmpyError("data loader state: its random generator state is corrupt") from None
        self.shard_order = list(order)
        self._open(shard, sample)

    def num_samples_of(self, file):
        """Samples in the file self.files[file]."""
        return (self.ntoks[file] - 1) // self.round
