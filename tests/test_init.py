"""A fresh model's weights against llm.c's initialisation, written out here from its published
source (train_gpt2.cu, gpt2_build_from_random; the same rule as GPT-2's paper and llm.c's
train_gpt2.py): every matrix N(0, 0.02), except the projections back into the residual stream
(attention's c_proj and the MLP's c_proj), N(0, 0.02 / sqrt(2 L)); wte over its V real rows
N(0, 0.02) and its padded rows zero; wpe N(0, 0.02); layernorm weights 1; all biases 0.

Statistics per tensor and per layer: a sample of n normal values has a mean within ~1/sqrt(n) of
the true std of 0 and a std within ~1/sqrt(2n) of the truth (relative), so 5 of those leave a
wrong scale nowhere to hide (1/sqrt(2L) is 0.204 for L = 12, 1/sqrt(L) 0.289, 1/sqrt(2L+2)
0.196) while a correct initialisation fails once in ~10^6 runs.
"""
import math

import numpy as np
import pytest

from llmpy.config import from_descriptor, num_parameters, param_shapes
from llmpy.gpt2 import init_params, split_flat

CFG = from_descriptor("d12")
L = CFG.num_layers
STD = 0.02
RESIDUAL_STD = 0.02 / math.sqrt(2 * 12)     # d12: 2L = 24

EXPECTED_STD = {"wte": STD, "wpe": STD, "qkvw": STD, "attprojw": RESIDUAL_STD, "fcw": STD,
                "fcprojw": RESIDUAL_STD}
ONES = ("ln1w", "ln2w", "lnfw")
ZEROS = ("ln1b", "qkvb", "attprojb", "ln2b", "fcb", "fcprojb", "lnfb")


@pytest.fixture(scope="module")
def params():
    return split_flat(init_params(CFG, seed=42), param_shapes(CFG))


def assert_normal_sample(x, std, what):
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    assert abs(x.mean()) <= 5 * std / math.sqrt(n), f"{what}: mean {x.mean():.3e}"
    assert abs(x.std() / std - 1) <= 5 / math.sqrt(2 * n), f"{what}: std {x.std():.6f}, expected {std:.6f}"


def test_the_weights_are_fp32_and_fill_the_flat_buffer(params):
    # the payload of an llm.c fp32 model file
    assert all(v.dtype == np.float32 for v in params.values())
    assert sum(v.size for v in params.values()) == num_parameters(CFG)


@pytest.mark.parametrize("name", ["qkvw", "attprojw", "fcw", "fcprojw"])
def test_each_layers_matrix_has_llm_c_std(params, name):
    for layer in range(L):
        assert_normal_sample(params[name][layer], EXPECTED_STD[name], f"{name}[{layer}]")


def test_token_embedding_rows_of_the_real_vocabulary_have_std_0_02(params):
    assert_normal_sample(params["wte"][:CFG.vocab_size], STD, "wte")


def test_token_embedding_padded_rows_are_zero(params):
    assert CFG.padded_vocab_size > CFG.vocab_size
    assert not params["wte"][CFG.vocab_size:].any()


def test_position_embedding_has_std_0_02(params):
    assert_normal_sample(params["wpe"], STD, "wpe")


@pytest.mark.parametrize("name", ONES)
def test_layernorm_weights_are_one(params, name):
    assert np.all(params[name] == 1.0)


@pytest.mark.parametrize("name", ZEROS)
def test_biases_are_zero(params, name):
    assert not params[name].any()


def test_no_two_tensors_share_their_random_values(params):
    # each matrix draws its own numbers: a copied or reused draw would pass the statistics
    firsts = [params[name].reshape(-1)[:64] / EXPECTED_STD[name] for name in EXPECTED_STD]
    firsts += [params[name][layer].reshape(-1)[:64] / EXPECTED_STD[name]
               for name in ("qkvw", "attprojw", "fcw", "fcprojw") for layer in range(1, L)]
    assert len({a.tobytes() for a in firsts}) == len(firsts)


def test_the_seed_decides_the_weights():
    small = from_descriptor("d6")
    assert np.array_equal(init_params(small, seed=7), init_params(small, seed=7))
    assert not np.array_equal(init_params(small, seed=7), init_params(small, seed=8))
