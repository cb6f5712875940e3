"""The key/value cache (llmpy/kvcache.py) on the GPU, in bf16: its logits after a prompt and after
each new token against the CPU's fp32 cache (itself checked against the full forward in
tests/test_kvcache.py) and against the GPU's full forward (GPT2.next_logits).

Tolerance: bf16 stores, as in tests/gpu/test_gpt2_cuda.py: ~1e-2 of the logits' scale. A wrong
position, mask or cache slot gives errors of order 1.
"""
import numpy as np
import pytest

from llmpy import cpu, cuda
from llmpy.config import from_descriptor
from llmpy.gpt2 import GPT2
from llmpy.kvcache import KVCacheGPT2
from llmpy.testing.compare import rel_error
from tests.gpu.test_gpt2_cuda import TINY
from tests.test_gpt2 import random_params

CONFIGS = [pytest.param(TINY, id="tiny"), pytest.param(from_descriptor("d12"), id="d12")]
STEPS = 24      # a 10-token prompt, then one token at a time


def contexts(cfg, seed):
    tokens = [int(t) for t in np.random.default_rng(seed).integers(0, cfg.vocab_size, STEPS)]
    return [tokens[:n] for n in [10] + list(range(11, STEPS + 1))]


def errors(model, reference, cfg, seed):
    """rel_error of model's logits against reference's after each context."""
    return [rel_error(model.ops.to_host(model.next_logits(c)), reference.ops.to_host(reference.next_logits(c)))
            for c in contexts(cfg, seed)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cached_bf16_logits_match_the_cpus_fp32_cache(cfg):
    params = random_params(cfg, seed=31)
    err = errors(KVCacheGPT2(cfg, cuda, params), KVCacheGPT2(cfg, cpu, params), cfg, seed=32)
    assert max(err) < 2e-2, err


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cached_logits_match_the_gpus_full_forward(cfg):
    params = random_params(cfg, seed=33)
    err = errors(KVCacheGPT2(cfg, cuda, params), GPT2(cfg, cuda, 1, STEPS, params=params), cfg, seed=34)
    assert max(err) < 2e-2, err
