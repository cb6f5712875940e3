import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from llmpy.shards import write_datafile
from llmpy.checkpoint import write_model
from tests.helpers import path_first
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


# mutmut (make mutate) learns which tests reach which function from the calls it sees in the
# pytest process while MUTANT_UNDER_TEST is "stats"; the tests that run a program as a subprocess
# reach it in another process, and run its mutants there. tests/mutmut_child/sitecustomize.py
# handles both in the subprocess; these hooks put it on the subprocesses' path under mutmut, and
# credit what each one reached to the test that started it, before mutmut's own teardown hook
# files the test's calls.
MUTMUT_CHILD = Path(__file__).parent / "mutmut_child"


def collecting_mutmut_stats():
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_runtest_setup(item):
    path = os.environ.get("PYTHONPATH", "")
    if os.environ.get("MUTANT_UNDER_TEST") and str(MUTMUT_CHILD) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = path_first(MUTMUT_CHILD, path)
    if collecting_mutmut_stats() and "LLMPY_MUTMUT_HITS" not in os.environ:
        os.environ["LLMPY_MUTMUT_HITS"] = tempfile.mkdtemp(prefix="mutmut_hits_")
        os.environ["LLMPY_MUTMUT_ROOT"] = os.getcwd()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    if collecting_mutmut_stats() and "LLMPY_MUTMUT_HITS" in os.environ:
        from mutmut.state import state
        for report in Path(os.environ["LLMPY_MUTMUT_HITS"]).glob("*.txt"):
            state()._stats.update(report.read_text().split())
            report.unlink()
