"""GELU and the residual add on the GPU against llmpy/cpu.py. bf16 output is one rounding of an
fp32 result: error <= 2^-9 of each value, so 1e-2 of the tensor's scale has a wide margin while a
wrong constant or formula is off by far more."""
import numpy as np

from llmpy import cpu
from llmpy.cuda import elementwise
from llmpy.testing.bf16 import gpu, host, poisoned, randn
from llmpy.testing.compare import assert_close

TOL = 1e-2
N = 3 * 8 * 4 * 96     # B=3, T=8, 4C=384: a multiple of 8, not of the block size


def test_gelu_forward_matches_numpy(rng):
    x = randn(rng, N, scale=3.0)
    ref, out = np.empty_like(x), poisoned(N)
    cpu.gelu_forward(ref, x)
    elementwise.gelu_forward(out, gpu(x))
    assert_close(host(out), ref, TOL, "gelu")


def test_gelu_backward_in_place_matches_numpy(rng):
    x, d = randn(rng, N, scale=3.0), randn(rng, N)
    ref = np.empty_like(x)
    cpu.gelu_backward(ref, x, d)
    dd = gpu(d)
    elementwise.gelu_backward(dd, gpu(x), dd)
    assert_close(host(dd), ref, TOL, "dgelu")


def test_residual_forward_adds(rng):
    a, b = randn(rng, N), randn(rng, N)
    out = poisoned(N)
    elementwise.residual_forward(out, gpu(a), gpu(b))
    assert_close(host(out), a + b, TOL, "residual")
