"""The FP8 path's pieces (kernels/fp8.cu, llmpy/cuda/fp8.py) against llmpy/fp8.py, the NumPy
reference (itself checked against torch's float8 types in tests/test_fp8.py).

Casts and scale updates are exact: the same fp32 multiply, the same round-to-nearest-even with
saturation, the same fp32 division; the bytes must decode to the reference's values exactly, and
the amax must be the largest |x| exactly. Outputs start as poison (0xFF bytes: NaN in E4M3 and
E5M2), so an element left unwritten fails.
The products: cuBLASLt multiplies the FP8 values exactly into fp32 sums and rounds to bf16 once,
so against the reference's fp64 product of the same FP8 values they differ by bf16 rounding and
fp32 summation, 1e-2 of the output's scale; against the exact product of the unquantized inputs
they stay within llmpy.fp8.matmul_error_bound (plus that rounding)."""
import cupy as cp
import numpy as np
import pytest

from llmpy import fp8
from llmpy.cuda import fp8 as cuda_fp8
from llmpy.testing.bf16 import bf16, gpu, host, poisoned, randn

FORMATS = pytest.mark.parametrize("fmt", [fp8.E4M3, fp8.E5M2], ids=lambda f: f.name)
needs_fp8_tensor_cores = pytest.mark.skipif(
    int(cp.cuda.Device().compute_capability) < 89, reason="cuBLASLt's FP8 needs Ada or Hopper")


def poisoned_bytes(*shape):
    return cp.full(shape, 0xFF, dtype=cp.uint8)


def scalar(value):
    return cp.asarray(np.float32(value)[None])


def wide_range(rng, rows, cols):
    """bf16 values over many binades, so that a scale sends some past the format's largest value
    (saturation) and some into its subnormals."""
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.uniform(-12, 4, (rows, cols)))
    return x.astype(bf16).astype(np.float32)


@FORMATS
def test_cast_stores_the_rounded_scaled_values_and_records_the_largest(fmt):
    rng = np.random.default_rng(0)
    x = wide_range(rng, 96, 1024)
    scale = np.float32(fmt.max / 4)          # the largest |x| is ~2^6: some values saturate
    out, amax = poisoned_bytes(96, 1024), scalar(0.5)
    cuda_fp8.cast(out, amax, gpu(x), scalar(scale), fmt)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out)), fp8.quantize(fmt, x, scale))
    assert fp8.decode(fmt, cp.asnumpy(out)).max() == fmt.max      # saturation was exercised
    assert host(amax)[0] == np.abs(x).max()


@FORMATS
def test_cast_transpose_writes_both_layouts(fmt):
    rng = np.random.default_rng(1)
    x = wide_range(rng, 128, 96)
    scale = np.float32(fmt.max / np.abs(x).max())
    out, out_t, amax = poisoned_bytes(128, 96), poisoned_bytes(96, 128), scalar(0.0)
    cuda_fp8.cast_transpose(out, out_t, amax, gpu(x), scalar(scale), fmt)
    expected = fp8.quantize(fmt, x, scale)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out)), expected)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out_t)), expected.T)
    assert host(amax)[0] == np.abs(x).max()


def test_amax_of_a_tensor_holding_nan_is_nan():
    x = np.ones((4, 64), np.float32)
    x[2, 5] = np.nan
    out, amax = poisoned_bytes(4, 64), scalar(0.0)
    cuda_fp8.cast(out, amax, gpu(x), scalar(1.0), fp8.E4M3)
    assert np.isnan(host(amax)[0])


@FORMATS
def test_scale_update_pushes_amax_and_follows_the_reference(fmt):
    history = np.array([[0.5, 2.0, 1.0, 0.0], [0.0] * 4, [1.0, np.nan, 1.0, 1.0],
                        [3.0, 0.25, 0.0, 7.0]], np.float32)
    amax = np.array([4.0, 0.0, 1.0, 1e-3], np.float32)
    scales = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    expected_history = fp8.push_amax(history, amax)
    expected = fp8.next_scales(expected_history, fmt, scales, margin=1)
    d_scale, d_inv, d_history, d_amax = (cp.asarray(a) for a in (scales, scales, history, amax))
    cuda_fp8.update_scales(d_scale, d_inv, d_history, d_amax, fmt, margin=1)
    np.testing.assert_array_equal(cp.asnumpy(d_history), expected_history)
    np.testing.assert_array_equal(cp.asnumpy(d_scale), expected)
    changed = expected != scales
    np.testing.assert_array_equal(cp.asnumpy(d_inv)[changed], np.float32(1) / expected[changed])
    np.testing.assert_array_equal(cp.asnumpy(d_amax), 0)


def operand(rng, fmt, rows, cols, std):
    """(bf16-rounded values, their FP8 bytes on the GPU, the scale, its inverse on the GPU)."""
    x = randn(rng, rows, cols, scale=std)
    scale = np.float32(fmt.max / np.abs(x).max())
    out, out_t, amax = poisoned_bytes(rows, cols), poisoned_bytes(cols, rows), scalar(0.0)
    cuda_fp8.cast_transpose(out, out_t, amax, gpu(x), scalar(scale), fmt)
    return x, out, out_t, scale, scalar(np.float32(1) / scale)


def assert_product(got, a, sa, fa, b, sb, fb):
    reference = fp8.scaled_matmul(a, sa, fa, b, sb, fb)
    scale = np.abs(reference).max()
    assert np.abs(got - reference).max() <= 1e-2 * scale
    exact = a.astype(np.float64) @ b
    assert (np.abs(got - exact) <= fp8.matmul_error_bound(a, fa, b, fb) + 1e-2 * scale).all()


@needs_fp8_tensor_cores
def test_the_three_products_of_a_linear_layer_match_the_reference():
    rng = np.random.default_rng(2)
    N, C, OC = 256, 192, 320
    inp, inp8, inp8_t, s_inp, inv_inp = operand(rng, fp8.E4M3, N, C, 1.0)
    w, w8, w8_t, s_w, inv_w = operand(rng, fp8.E4M3, OC, C, 0.02)
    dout, dout8, dout8_t, s_dout, inv_dout = operand(rng, fp8.E5M2, N, OC, 1e-4)

    out = poisoned(N, OC)
    cuda_fp8.forward(out, inp8, inv_inp, w8, inv_w)
    assert_product(host(out), inp, s_inp, fp8.E4M3, w.T, s_w, fp8.E4M3)

    dinp = poisoned(N, C)
    cuda_fp8.backward_inp(dinp, dout8, inv_dout, w8_t, inv_w)
    assert_product(host(dinp), dout, s_dout, fp8.E5M2, w, s_w, fp8.E4M3)

    prefill = randn(rng, OC, C, scale=1e-3)
    dweight = gpu(prefill)
    cuda_fp8.backward_weight(dweight, dout8_t, inv_dout, inp8_t, inv_inp)
    assert_product(host(dweight) - prefill, dout.T, s_dout, fp8.E5M2, inp, s_inp, fp8.E4M3)
