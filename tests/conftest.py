import numpy as np
import pytest

from llmpy.shards import write_datafile
from llmpy.checkpoint import write_model
from tests.test_gpt2 import TINY, random_params


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name (stable across runs)."""
    seed = sum(ord(c) * 31 ** i for i, c in enumerate(request.node.name)) % 2**32
    return np.random.default_rng(seed)


@pytest.fixture
def tiny_run(tmp_path):
    """A tiny model file and train/val shards of tokens in its vocabulary; returns the flags."""
    rng = np.random.default_rng(0)
    write_datafile(tmp_path / "train.bin", rng.integers(0, TINY.vocab_size, 4000))
    write_datafile(tmp_path / "val.bin", rng.integers(0, TINY.vocab_size, 1000))
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    return ["-e", tmp_path / "tiny.bin", "-i", tmp_path / "train.bin", "-j", tmp_path / "val.bin",
            "-b", 2, "-t", 16, "-s", 0]
