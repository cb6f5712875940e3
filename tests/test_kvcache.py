"""The key/value cache (llmpy/kvcache.py) against the full forward (GPT2.next_logits), which
recomputes the whole context for every token, on a tiny random model.

Tolerance: both are fp32 and add the same products, grouped differently (a few rows' matmul
instead of the whole context's), so the logits agree to fp32 rounding, ~1e-6 of their scale;
1e-5 leaves room. A wrong position, mask or cache slot gives errors of order 1.
"""
import numpy as np
import pytest

from llmpy import cpu
from llmpy.gpt2 import GPT2
from llmpy.kvcache import KVCacheGPT2
from llmpy.sampler import generate
from llmpy.testing.compare import assert_close
from tests.test_gpt2 import TINY, random_params

MAX_T = TINY.max_seq_len


def models(seed):
    """(cached, full) on the same random weights; full is allocated for max_seq_len, so both
    crop a context to the same length."""
    params = random_params(TINY, seed)
    return KVCacheGPT2(TINY, cpu, params), GPT2(TINY, cpu, 1, MAX_T, params=params)


def random_tokens(n, seed):
    return [int(t) for t in np.random.default_rng(seed).integers(0, TINY.vocab_size, n)]


def test_logits_after_a_prompt_and_each_new_token_match_the_full_forward():
    cached, full = models(seed=1)
    context = random_tokens(MAX_T, seed=2)
    for n in [10] + list(range(11, MAX_T + 1)):          # a 10-token prompt in one forward, then one by one
        assert_close(cached.next_logits(context[:n]), full.next_logits(context[:n]), 1e-5, f"{n} tokens")


def test_a_context_that_shares_only_a_prefix_is_recomputed_from_where_it_differs():
    cached, full = models(seed=3)
    first = random_tokens(12, seed=4)
    second = first[:5] + random_tokens(7, seed=5)
    assert second[5:] != first[5:]
    cached.next_logits(first)
    assert_close(cached.next_logits(second), full.next_logits(second), 1e-5, "second context")


def test_a_shorter_context_after_a_longer_one_matches_the_full_forward():
    cached, full = models(seed=6)
    context = random_tokens(14, seed=7)
    cached.next_logits(context)
    assert_close(cached.next_logits(context[:9]), full.next_logits(context[:9]), 1e-5, "shorter context")


class RowCountingOps:
    """llmpy.cpu, recording how many rows each matmul multiplies (matmul_forward, and
    matmul_gelu_forward's)."""

    def __init__(self):
        self.rows = []

    def __getattr__(self, name):
        return getattr(cpu, name)

    def matmul_forward(self, out, inp, weight, bias):
        self.rows.append(inp.size // weight.shape[1])
        cpu.matmul_forward(out, inp, weight, bias)

    def matmul_gelu_forward(self, out, pre_gelu, inp, weight, bias):
        self.rows.append(inp.size // weight.shape[1])
        cpu.matmul_gelu_forward(out, pre_gelu, inp, weight, bias)


def test_each_new_token_costs_one_positions_forward():
    ops = RowCountingOps()
    cached = KVCacheGPT2(TINY, ops, random_params(TINY, seed=8))
    context = random_tokens(MAX_T, seed=9)
    cached.next_logits(context[:10])
    assert ops.rows == [10] * (4 * TINY.num_layers) + [1]    # the LM head: the last position only
    ops.rows.clear()
    cached.next_logits(context[:11])
    assert ops.rows == [1] * (4 * TINY.num_layers + 1)


def test_greedy_generation_with_the_cache_equals_full_recomputation():
    cached, full = models(seed=10)
    prompt = random_tokens(3, seed=11)
    ours = generate(cached, prompt, MAX_T - 3, np.random.default_rng(0), top_k=1)
    assert ours == generate(full, prompt, MAX_T - 3, np.random.default_rng(0), top_k=1)


def test_sampled_generation_with_the_cache_equals_full_recomputation_at_a_fixed_seed():
    cached, full = models(seed=12)
    prompt = random_tokens(3, seed=13)
    ours = generate(cached, prompt, MAX_T - 3, np.random.default_rng(14), temperature=1.5)
    assert ours == generate(full, prompt, MAX_T - 3, np.random.default_rng(14), temperature=1.5)
    assert len(set(ours[3:])) > 3                  # sampled, not stuck on one token


def test_past_max_seq_len_the_cache_crops_the_context_as_full_recomputation_does():
    """nanoGPT's crop: each token after the first max_seq_len sees the last max_seq_len tokens."""
    cached, full = models(seed=15)
    prompt = random_tokens(3, seed=16)
    ours = generate(cached, prompt, 3 * MAX_T, np.random.default_rng(17), top_k=5)
    assert ours == generate(full, prompt, 3 * MAX_T, np.random.default_rng(17), top_k=5)


@pytest.mark.parametrize("length", [0, MAX_T + 1])
def test_a_context_of_no_tokens_or_more_than_max_seq_len_is_refused(length):
    cached, _ = models(seed=18)
    with pytest.raises(ValueError, match=f"{length} tokens"):
        cached.next_logits(random_tokens(length, seed=19))
