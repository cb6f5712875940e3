"""bf16 on the GPU for the tests and dev/cuda: bf16-rounded random inputs (so that the NumPy
reference and the GPU see the same values), transfers, NaN-poisoned outputs, raw bits."""
import cupy as cp
import ml_dtypes
import numpy as np

bf16 = ml_dtypes.bfloat16


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(bf16).astype(np.float32)


def gpu(a, dtype=bf16):
    return cp.asarray(np.asarray(a).astype(dtype))


def poisoned(*shape, dtype=bf16):
    return cp.full(shape, np.nan, dtype=dtype)


def host(a):
    return cp.asnumpy(a).astype(np.float32)


def bits(a):
    """A bf16 array's raw 16-bit patterns, for bit-exact comparisons."""
    return cp.asnumpy(a).view(np.uint16)
