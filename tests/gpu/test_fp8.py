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

from llmpy import cpu, fp8
from llmpy.cuda import fp8 as cuda_fp8
from llmpy.testing.bf16 import gpu, host, poisoned, randn
from llmpy.testing.fp8 import Operand, device_scalar, poisoned_bytes, wide_range

FORMATS = pytest.mark.parametrize("fmt", [fp8.E4M3, fp8.E5M2], ids=lambda f: f.name)
needs_fp8_tensor_cores = pytest.mark.skipif(
    int(cp.cuda.Device().compute_capability) < 89, reason="cuBLASLt's FP8 needs Ada or Hopper")


@FORMATS
def test_cast_stores_the_rounded_scaled_values_and_records_the_largest(fmt):
    rng = np.random.default_rng(0)
    x = wide_range(rng, 96, 1024)
    scale = np.float32(fmt.max / 4)          # the largest |x| is ~2^6: some values saturate
    out, amax = poisoned_bytes(96, 1024), device_scalar(0.5)
    cuda_fp8.cast(out, amax, gpu(x), device_scalar(scale), fmt)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out)), fp8.quantize(fmt, x, scale))
    assert fp8.decode(fmt, cp.asnumpy(out)).max() == fmt.max      # saturation was exercised
    assert host(amax)[0] == np.abs(x).max()


@FORMATS
@pytest.mark.parametrize("rows, cols", [(128, 96), (8, 8), (296, 200), (1024, 768)])
def test_cast_transpose_writes_both_layouts(fmt, rows, cols):
    """Whole tiles, tiles cut short in either dimension (kernels/fp8.cu's are 128 x 64), and a
    tensor smaller than one tile."""
    rng = np.random.default_rng(1)
    x = wide_range(rng, rows, cols)
    scale = np.float32(fmt.max / np.abs(x).max())
    out, out_t, amax = poisoned_bytes(rows, cols), poisoned_bytes(cols, rows), device_scalar(0.0)
    cuda_fp8.cast_transpose(out, out_t, amax, gpu(x), device_scalar(scale), fmt)
    expected = fp8.quantize(fmt, x, scale)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out)), expected)
    np.testing.assert_array_equal(fp8.decode(fmt, cp.asnumpy(out_t)), expected.T)
    assert host(amax)[0] == np.abs(x).max()


@pytest.mark.parametrize("rows, cols", [(296, 200), (1024, 768)])
def test_cast_transpose_adds_the_column_sums_into_dbias(rows, cols):
    """An output gradient's cast also sums its linear's bias gradient: dbias += the column sums
    of the unscaled input, in fp32 and rounded to bf16 once, as matmul's bias_backward does."""
    rng = np.random.default_rng(2)
    x, start = randn(rng, rows, cols), randn(rng, cols)
    dbias = gpu(start)
    out, out_t, amax = poisoned_bytes(rows, cols), poisoned_bytes(cols, rows), device_scalar(0.0)
    cuda_fp8.cast_transpose(out, out_t, amax, gpu(x), device_scalar(1000.0), fp8.E5M2, dbias=dbias)
    expected = start + x.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(host(dbias), expected, rtol=1e-2, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_array_equal(fp8.decode(fp8.E5M2, cp.asnumpy(out_t)),
                                  fp8.quantize(fp8.E5M2, x, np.float32(1000.0)).T)


def test_amax_of_a_tensor_holding_nan_is_nan():
    x = np.ones((4, 64), np.float32)
    x[2, 5] = np.nan
    out, amax = poisoned_bytes(4, 64), device_scalar(0.0)
    cuda_fp8.cast(out, amax, gpu(x), device_scalar(1.0), fp8.E4M3)
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


def assert_product(got, a, a_op, b, b_op):
    """got = a @ b, where a and b are (transposes of) the values of the operands a_op and b_op."""
    reference = fp8.scaled_matmul(a, a_op.scale_value, a_op.fmt, b, b_op.scale_value, b_op.fmt)
    scale = np.abs(reference).max()
    assert np.abs(got - reference).max() <= 1e-2 * scale
    exact = a.astype(np.float64) @ b
    assert (np.abs(got - exact) <= fp8.matmul_error_bound(a, a_op.fmt, b, b_op.fmt) + 1e-2 * scale).all()


@needs_fp8_tensor_cores
def test_the_three_products_of_a_linear_layer_match_the_reference():
    rng = np.random.default_rng(2)
    N, C, OC = 256, 192, 320
    inp = Operand(randn(rng, N, C), fp8.E4M3)
    w = Operand(randn(rng, OC, C, scale=0.02), fp8.E4M3)
    dout = Operand(randn(rng, N, OC, scale=1e-4), fp8.E5M2)

    out = poisoned(N, OC)
    cuda_fp8.forward(out, inp.q, inp.inv, w.q, w.inv)
    assert_product(host(out), inp.values, inp, w.values.T, w)

    dinp = poisoned(N, C)
    cuda_fp8.backward_inp(dinp, dout.q, dout.inv, w.q_t, w.inv)
    assert_product(host(dinp), dout.values, dout, w.values, w)

    prefill = randn(rng, OC, C, scale=1e-3)
    dweight = gpu(prefill)
    cuda_fp8.backward_weight(dweight, dout.q_t, dout.inv, inp.q_t, inp.inv)
    assert_product(host(dweight) - prefill, dout.values.T, dout, inp.values, inp)


@needs_fp8_tensor_cores
def test_the_backward_through_gelu_multiplies_the_product_by_gelus_derivative():
    """fcproj's dinp: the FP8 product of dout and W, times gelu'(pre_gelu) (llmpy/cpu.py's
    gelu_backward as the reference), with the product's rounding to bf16 before it."""
    rng = np.random.default_rng(3)
    N, C, OC = 256, 320, 192
    w = Operand(randn(rng, OC, C, scale=0.02), fp8.E4M3)
    dout = Operand(randn(rng, N, OC, scale=1e-4), fp8.E5M2)
    pre_gelu = randn(rng, N, C, scale=2.0)
    dinp = poisoned(N, C)
    cuda_fp8.backward_inp(dinp, dout.q, dout.inv, w.q_t, w.inv, pre_gelu=gpu(pre_gelu))
    product = fp8.scaled_matmul(dout.values, dout.scale_value, dout.fmt, w.values, w.scale_value, w.fmt)
    expected = np.empty_like(pre_gelu)
    cpu.gelu_backward(expected, pre_gelu, product.astype(np.float32))
    assert np.abs(host(dinp) - expected).max() <= 2e-2 * np.abs(expected).max()
