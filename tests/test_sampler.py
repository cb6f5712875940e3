"""Sampling (llmpy/sampler.py) with the HellaSwag chooser model, whose favourite token is set."""
import numpy as np
import pytest

from llmpy.sampler import generate, prompt_tokens
from llmpy.tokenizer import EOT, get_tokenizer
from tests.test_hellaswag import BANANA, chooser


def test_samples_start_from_endoftext_then_the_prompt():
    enc = get_tokenizer()
    assert prompt_tokens(enc) == [EOT]
    assert prompt_tokens(enc, "Hello world") == [EOT, 15496, 995]


def test_top_k_one_always_takes_the_most_likely_token():
    tokens = generate(chooser(B=1), [EOT, 32], 5, np.random.default_rng(0), top_k=1)
    assert tokens == [EOT, 32] + [BANANA] * 5


def test_low_temperature_sharpens_towards_the_most_likely_token():
    # at temperature 1 the favoured token has probability e^5 / (50256 + e^5) ~ 0.3%
    rng = np.random.default_rng(0)
    assert generate(chooser(B=1), [EOT], 20, rng, temperature=0.05)[1:] == [BANANA] * 20
    assert generate(chooser(B=1), [EOT], 20, rng, temperature=1.0)[1:].count(BANANA) < 5


def test_the_same_generator_state_gives_the_same_sample():
    a = generate(chooser(B=1), [EOT], 8, np.random.default_rng(7), top_k=50)
    b = generate(chooser(B=1), [EOT], 8, np.random.default_rng(7), top_k=50)
    assert a == b


def test_a_context_longer_than_t_is_cut_to_its_last_t_tokens():
    tokens = generate(chooser(B=1, T=8), [EOT] * 20, 2, np.random.default_rng(0), top_k=1)
    assert tokens[-2:] == [BANANA, BANANA]


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        generate(chooser(B=1), [EOT], 1, np.random.default_rng(0), temperature=0.0)
