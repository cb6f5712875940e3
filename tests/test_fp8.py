"""llmpy/fp8.py, the FP8 reference, against torch's float8 types (an independent implementation of
the OCP formats) and against the formats' and Transformer Engine's delayed-scaling formulas
written out here."""
import numpy as np
import pytest
import torch

from llmpy import fp8

TORCH = {fp8.E4M3: torch.float8_e4m3fn, fp8.E5M2: torch.float8_e5m2}
FORMATS = pytest.mark.parametrize("fmt", [fp8.E4M3, fp8.E5M2], ids=lambda f: f.name)


def values_across_binades(rng, fmt, n=200_000):
    """Signed values from deep in the subnormals up to the format's largest, log-uniform."""
    lowest = fmt.min_exponent - fmt.mantissa_bits - 2
    magnitude = np.exp2(rng.uniform(lowest, np.log2(fmt.max), n))
    return (magnitude * rng.choice([-1.0, 1.0], n)).astype(np.float32)


@FORMATS
def test_rounding_matches_torchs_float8_casts(fmt):
    x = values_across_binades(np.random.default_rng(0), fmt)
    expected = torch.from_numpy(x).to(TORCH[fmt]).float().numpy()
    np.testing.assert_array_equal(fp8.round_to(fmt, x), expected)


@FORMATS
def test_rounding_saturates_at_the_largest_value_and_keeps_nan(fmt):
    x = np.array([fmt.max * 1.01, -fmt.max * 3, np.inf, -np.inf, 1e30, np.nan], np.float32)
    got = fp8.round_to(fmt, x)
    np.testing.assert_array_equal(got[:5], [fmt.max, -fmt.max, fmt.max, -fmt.max, fmt.max])
    assert np.isnan(got[5])


def test_largest_values_are_the_formats():
    # OCP FP8: E4M3 = 1.75 * 2^8 (S.1111.111 is NaN, so the top mantissa is 110), E5M2 = 1.75 * 2^15
    assert (fp8.E4M3.max, fp8.E5M2.max) == (1.75 * 2 ** 8, 1.75 * 2 ** 15)


def test_ties_round_to_the_even_mantissa():
    # E4M3 has 3 mantissa bits: between 1 and 2 the step is 1/8
    halfway = np.array([1 + 1 / 16, 1 + 3 / 16, -(1 + 5 / 16), 15.5], np.float32)
    np.testing.assert_array_equal(fp8.round_to(fp8.E4M3, halfway), [1.0, 1.25, -1.25, 16.0])


@FORMATS
def test_decoding_every_byte_matches_torch(fmt):
    codes = np.arange(256, dtype=np.uint8)
    expected = torch.from_numpy(codes).view(TORCH[fmt]).float().numpy()
    np.testing.assert_array_equal(fp8.decode(fmt, codes), expected)


def test_quantize_scales_before_rounding():
    x = np.array([0.01, 0.0123, -3.3e-3], np.float32)
    scale = np.float32(448 / 0.0123)
    expected = torch.from_numpy(x * scale).to(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(fp8.quantize(fp8.E4M3, x, scale), expected)


def fp8_product_by_torch(a, sa, b, sb):
    qa = torch.from_numpy(a * np.float32(sa)).to(torch.float8_e4m3fn).double()
    qb = torch.from_numpy(b * np.float32(sb)).to(torch.float8_e5m2).double()
    return (qa @ qb / (float(np.float32(sa)) * float(np.float32(sb)))).numpy()


def test_scaled_matmul_is_the_product_of_the_quantized_operands():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((48, 64)).astype(np.float32)
    b = (rng.standard_normal((64, 32)) * 1e-3).astype(np.float32)
    sa, sb = 448 / np.abs(a).max(), 57344 / np.abs(b).max()
    got = fp8.scaled_matmul(a, sa, fp8.E4M3, b, sb, fp8.E5M2)
    np.testing.assert_allclose(got, fp8_product_by_torch(a, sa, b, sb), rtol=1e-12, atol=0)


def test_scaled_matmul_error_stays_within_the_stated_bound_and_near_it():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 256)).astype(np.float32)
    b = rng.standard_normal((256, 64)).astype(np.float32)
    sa, sb = 448 / np.abs(a).max(), 57344 / np.abs(b).max()
    error = np.abs(fp8.scaled_matmul(a, sa, fp8.E4M3, b, sb, fp8.E5M2) - a.astype(np.float64) @ b)
    bound = fp8.matmul_error_bound(a, fp8.E4M3, b, fp8.E5M2)
    # half a step of each operand: 2^-4 (E4M3) and 2^-3 (E5M2), written out
    np.testing.assert_allclose(bound, (1 / 16 + 1 / 8 + 1 / 128) * (np.abs(a) @ np.abs(b.astype(np.float64))),
                               rtol=1e-12)
    assert (error <= bound).all()
    assert error.max() > bound.max() / 50       # random rounding errors cancel, but not that much


def test_next_scale_is_the_formats_largest_over_the_historys_largest():
    history = np.array([[0.5, 2.0, 1.0], [3.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(fp8.next_scales(history, fp8.E4M3, [1.0, 1.0]),
                                  np.array([224.0, 448 / 3], np.float32))
    np.testing.assert_array_equal(fp8.next_scales(history, fp8.E5M2, [1.0, 1.0], margin=2),
                                  [57344 / 2 / 4, np.float32(57344 / 3) / 4])


def test_a_tensor_without_a_usable_history_keeps_its_scale():
    history = np.array([[0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0], [1.0, 1.0]], np.float32)
    got = fp8.next_scales(history, fp8.E4M3, [5.0, 6.0, 7.0, 8.0])
    np.testing.assert_array_equal(got, [5.0, 6.0, 7.0, 448.0])


def test_the_newest_amax_goes_in_front_and_the_oldest_drops_out():
    history = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    np.testing.assert_array_equal(fp8.push_amax(history, [9.0, 8.0]), [[9, 1, 2], [8, 4, 5]])


def test_values_are_rounded_as_their_fp32_values_as_the_gpus_casts_do():
    # the GPU casts fp32 values (from bf16) times an fp32 scale: an input with more precision is
    # its fp32 value first. 1.0625 + 1e-12 is the E4M3 tie 1.0625 in fp32 (ties go to even: 1.0),
    # and 1 + 0.99 * 2^-24 is 1.0 in fp32, so its product with 1.0625 is that tie again, where
    # the exact product lies just above it (1.125)
    assert fp8.round_to(fp8.E4M3, np.float64(1.0625) + 1e-12) == 1.0
    assert fp8.quantize(fp8.E4M3, np.float64(1 + 0.99 * 2.0 ** -24), 1.0625) == 1.0
