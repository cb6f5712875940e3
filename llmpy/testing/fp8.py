"""FP8 operands on the GPU for tests/gpu/test_fp8.py and dev/cuda/fp8.py: a tensor as cuBLASLt's
FP8 products read it, cast by kernels/fp8.cu with the scale that maps its largest |value| to the
format's largest."""
import cupy as cp
import numpy as np

from llmpy.cuda import fp8 as cuda_fp8
from llmpy.testing.bf16 import bf16, gpu


def device_scalar(value):
    """One fp32 on the GPU: a scale, its inverse, an amax."""
    return cp.asarray(np.float32(value)[None])


def wide_range(rng, rows, cols):
    """bf16 values (as fp32, on the host) over many binades, so that a scale sends some past the
    format's largest value (saturation) and some into its subnormals."""
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.uniform(-12, 4, (rows, cols)))
    return x.astype(bf16).astype(np.float32)


def poisoned_bytes(*shape):
    """FP8 bytes that are NaN in E4M3 and E5M2 (0xFF): an element left unwritten fails."""
    return cp.full(shape, 0xFF, dtype=cp.uint8)


class Operand:
    """values (rows, cols), host fp32 already bf16-rounded, and on the GPU: `bf16` the same values,
    `q` and `q_t` their FP8 bytes as stored and transposed (poisoned, then written by cast()),
    `scale` and `inv` (its inverse, what the products multiply by); `scale_value` on the host."""

    def __init__(self, values, fmt):
        self.values, self.fmt = values, fmt
        self.bf16 = gpu(values)
        rows, cols = values.shape
        self.q, self.q_t = poisoned_bytes(rows, cols), poisoned_bytes(cols, rows)
        self.amax = device_scalar(0.0)
        self.scale_value = np.float32(fmt.max / np.abs(values).max())
        self.scale = device_scalar(self.scale_value)
        self.inv = device_scalar(np.float32(1) / self.scale_value)
        self.cast()

    def cast(self):
        cuda_fp8.cast_transpose(self.q, self.q_t, self.amax, self.bf16, self.scale, self.fmt)
