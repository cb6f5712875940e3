"""llm.c's Mersenne Twister (llmc/rand.h), the generator behind its shuffled batch order.

MT19937 as Matsumoto and Nishimura define it and as PyTorch and llm.c implement it: the state
seeded by init_genrand, 32-bit outputs. llm.c's data loader draws only 32-bit integers from it,
through random_permutation (a Fisher-Yates shuffle from the last element down).
"""
import numpy as np

N, M = 624, 397
MATRIX_A = np.uint32(0x9908B0DF)
UPPER, LOWER = np.uint32(0x80000000), np.uint32(0x7FFFFFFF)


def _twist(s):
    """The next 624 words of the state. Word j mixes words j, j+1 and j+M (mod N) as they are
    when its turn comes in the sequential algorithm: j+1 still old (j < N-1), j+M old for
    j < N-M and already renewed after that, so the renewal runs in four dependent slices."""
    y = (s[:-1] & UPPER) | (s[1:] & LOWER)
    mixed = (y >> 1) ^ np.where(y & 1, MATRIX_A, np.uint32(0))
    new = np.empty(N, dtype=np.uint32)
    new[:N - M] = s[M:] ^ mixed[:N - M]
    new[N - M:2 * (N - M)] = new[:N - M] ^ mixed[N - M:2 * (N - M)]
    new[2 * (N - M):N - 1] = new[N - M:M - 1] ^ mixed[2 * (N - M):N - 1]
    last = (s[N - 1] & UPPER) | (new[0] & LOWER)
    new[N - 1] = new[M - 1] ^ (last >> 1) ^ (MATRIX_A if last & 1 else np.uint32(0))
    return new


def _temper(y):
    y = y ^ (y >> 11)
    y ^= (y << 7) & np.uint32(0x9D2C5680)
    y ^= (y << 15) & np.uint32(0xEFC60000)
    return y ^ (y >> 18)


class MersenneTwister:
    """llm.c's mt19937_state: MersenneTwister(seed) is its manual_seed(seed), random_u32 its
    randint32. The state is JSON-able (state() / set_state()), for resuming a run."""

    def __init__(self, seed):
        key = np.empty(N, dtype=np.uint32)
        x = seed & 0xFFFFFFFF
        for j in range(N):
            key[j] = x
            x = (1812433253 * (x ^ (x >> 30)) + j + 1) & 0xFFFFFFFF
        # the first draw twists the seeded state first (llm.c: left_ = 1)
        self.key, self.index = key, N

    def random_u32(self, n):
        """The next n outputs, as uint32."""
        out = np.empty(n, dtype=np.uint32)
        filled = 0
        while filled < n:
            if self.index == N:
                self.key, self.index = _twist(self.key), 0
            take = min(n - filled, N - self.index)
            out[filled:filled + take] = self.key[self.index:self.index + take]
            self.index += take
            filled += take
        return _temper(out)

    def state(self):
        return {"key": self.key.tolist(), "index": self.index}

    def set_state(self, d):
        """Restore state(); ValueError (or KeyError, TypeError) if d is not one."""
        key, index = np.asarray(d["key"]), d["index"]
        if key.shape != (N,) or key.dtype.kind not in "iu" or key.min() < 0 or key.max() >= 2**32 \
                or type(index) is not int or not 0 <= index <= N:
            raise ValueError("not a Mersenne Twister state")
        self.key, self.index = key.astype(np.uint32), index


def random_permutation(items, rng):
    """Shuffle the list `items` in place as llm.c's random_permutation does: for i from the
    last index down to 1, swap items[i] with items[u % (i + 1)], u the next 32-bit output.
    Returns items."""
    n = len(items)
    if n > 1:
        picks = (rng.random_u32(n - 1) % np.arange(n, 1, -1, dtype=np.uint32)).tolist()
        for i, j in zip(range(n - 1, 0, -1), picks):
            items[i], items[j] = items[j], items[i]
    return items
