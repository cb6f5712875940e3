"""Out of memory at start: recognising it, and -b auto's ladder of retries (llmpy/autofit.py)."""
import re

import pytest

from llmpy import LlmpyError
from llmpy.autofit import advice, attempts, auto_start_B, fit, is_out_of_memory


class FakeCudaOOM(MemoryError):
    """CuPy's cupy.cuda.memory.OutOfMemoryError is a MemoryError."""


def test_memory_errors_and_cuda_allocation_failures_are_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(FakeCudaOOM("Out of memory allocating 1,073,741,824 bytes"))
    assert is_out_of_memory(RuntimeError("cudaErrorMemoryAllocation: out of memory"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(ValueError("batch 8x16 exceeds the allocated 4x16"))


def test_attempts_add_recompute_then_halve_the_micro_batch():
    assert list(attempts(64, 0)) == [(64, 0), (64, 1), (32, 1), (16, 1), (8, 1), (4, 1), (2, 1), (1, 1)]


def test_attempts_keep_a_stronger_recompute_and_stop_at_an_odd_batch():
    assert list(attempts(12, 2)) == [(12, 2), (6, 2), (3, 2)]


def test_auto_start_is_the_largest_divisor_of_the_batch_up_to_64():
    assert auto_start_B(512) == 64 and auto_start_B(64) == 64 and auto_start_B(48) == 48
    assert auto_start_B(96) == 48


def memory_limited_build(budget):
    """A stand-in for building the model: memory B * (4 - recompute), out of memory above budget."""
    tried = []

    def build(B, recompute):
        tried.append((B, recompute))
        if B * (4 - recompute) > budget:
            raise MemoryError("out of memory")
        return f"model B={B} r={recompute}"
    return build, tried


def test_fit_takes_the_first_attempt_that_fits_and_says_what_failed():
    build, tried = memory_limited_build(budget=60)
    said = []
    assert fit(build, 64, 0, say=said.append) == ("model B=16 r=1", 16, 1)
    assert tried == [(64, 0), (64, 1), (32, 1), (16, 1)]
    assert said == ["-b auto: out of memory with B=64 -r 0", "-b auto: out of memory with B=64 -r 1",
                    "-b auto: out of memory with B=32 -r 1"]


def test_fit_releases_memory_after_each_failure():
    build, _ = memory_limited_build(budget=60)
    released = []
    fit(build, 64, 0, release=lambda: released.append(1), say=lambda _: None)
    assert len(released) == 3


def test_fit_passes_other_errors_through():
    def build(B, recompute):
        raise ValueError("not a memory problem")
    with pytest.raises(ValueError):
        fit(build, 64, 0)


def test_fit_gives_up_with_one_line_when_nothing_fits():
    build, _ = memory_limited_build(budget=1)
    with pytest.raises(LlmpyError, match="even with B=1 -r 1"):
        fit(build, 4, 0, say=lambda _: None)


def test_advice_names_the_run_smaller_batch_with_the_total_and_auto():
    text = advice("NVIDIA H200", 64, 1024, 0, 524288, MemoryError("Out of memory\nallocating"))
    assert "\n" not in text
    for words in ("out of memory on NVIDIA H200", "-b 64 -t 1024 -r 0", "-d 524288", "-b auto"):
        assert words in text


@pytest.mark.parametrize("recompute, offered", [(0, ["-r 1", "-r 2"]), (1, ["-r 2"]), (2, [])])
def test_advice_offers_only_more_recompute_than_the_run_has(recompute, offered):
    text = advice("NVIDIA H100", 32, 1024, recompute, 524288, MemoryError("Out of memory"))
    suggestions = text.split(": try ", 1)[1]
    assert re.findall(r"-r \d", suggestions) == offered
    assert "smaller -b" in suggestions and "-b auto" in suggestions
