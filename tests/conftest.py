import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name (stable across runs)."""
    seed = sum(ord(c) * 31 ** i for i, c in enumerate(request.node.name)) % 2**32
    return np.random.default_rng(seed)
