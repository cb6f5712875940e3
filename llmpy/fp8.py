"""FP8's numbers, written once in NumPy: the reference that the CUDA casts (kernels/fp8.cu) and
cuBLASLt's FP8 matmuls (dev/cuda/fp8.py, tests/gpu/test_fp8.py) are checked against.

Two formats of one byte (the OCP FP8 formats that Hopper's tensor cores take):
  E4M3  1 sign, 4 exponent (bias 7), 3 mantissa bits: largest 448, relative step 2^-3; no
        infinities (S.1111.111 is NaN). For activations and weights, which need the precision.
  E5M2  1 sign, 5 exponent (bias 15), 2 mantissa bits: largest 57344, relative step 2^-2, IEEE
        infinities and NaNs. For gradients, which need the range.
A tensor x is stored as q = fp8(x * scale), one fp32 scale per tensor chosen so that its largest
|x| lands near the format's largest value; the matmul multiplies by 1/scale of each operand in
fp32 after accumulating (cuBLASLt's A/B scale pointers take those inverses).

Scales come from the past (Transformer Engine's "delayed scaling"): the largest |x| of each of the
last `length` steps is kept per tensor, and this step casts with
    scale = max_of_format / max(history) / 2^margin,
so the cast can run inside the kernel that produces x, in one pass, while that kernel also records
this step's largest |x| for the next. A tensor that grows faster than the history adapts
saturates at ±max for a step (the cast clamps, never overflows to inf or NaN)."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Format:
    name: str
    exponent_bits: int
    mantissa_bits: int
    max: float                 # largest finite value

    @property
    def bias(self):
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def min_exponent(self):    # of the smallest normal value; subnormals share its step
        return 1 - self.bias

    @property
    def step(self):            # relative spacing of normal values: the worst rounding is half
        return 2.0 ** -self.mantissa_bits


E4M3 = Format("e4m3", 4, 3, 448.0)
E5M2 = Format("e5m2", 5, 2, 57344.0)


def round_to(fmt, x):
    """x (fp32) rounded to the nearest value of fmt, ties to even, saturating at ±fmt.max (CUDA's
    __NV_SATFINITE conversion and cuBLASLt's FP8 outputs); ±inf saturates too, NaN stays NaN.
    Returned as fp32 (every FP8 value is one exactly)."""
    x = np.asarray(x, dtype=np.float32)
    # |x| = m * 2^e with m in [0.5, 1): the spacing of fmt's values near x is 2^(e - 1 - mantissa)
    _, e = np.frexp(np.where(np.isfinite(x), x, 0).astype(np.float32))
    spacing = np.exp2(np.maximum(e - 1, fmt.min_exponent) - fmt.mantissa_bits).astype(np.float32)
    with np.errstate(invalid="ignore"):
        rounded = (np.round(x / spacing) * spacing).astype(np.float32)   # np.round: ties to even
    rounded = np.where(np.isinf(x), x, rounded)
    return np.clip(rounded, -fmt.max, fmt.max).astype(np.float32)


def decode(fmt, codes):
    """The fp32 values of FP8 bytes (uint8): how the GPU's outputs are read back."""
    codes = np.asarray(codes, dtype=np.uint8).astype(np.int32)
    sign = np.where(codes >> 7, -1.0, 1.0)
    exponent = (codes >> fmt.mantissa_bits) & ((1 << fmt.exponent_bits) - 1)
    mantissa = codes & ((1 << fmt.mantissa_bits) - 1)
    normal = (1.0 + mantissa / (1 << fmt.mantissa_bits)) * np.exp2(exponent - fmt.bias)
    subnormal = mantissa / (1 << fmt.mantissa_bits) * np.exp2(float(fmt.min_exponent))
    value = sign * np.where(exponent == 0, subnormal, normal)
    top = exponent == (1 << fmt.exponent_bits) - 1
    if fmt is E4M3:        # only S.1111.111 is special
        value = np.where(top & (mantissa == 7), np.nan, value)
    else:                  # IEEE: the top exponent is inf (mantissa 0) or NaN
        value = np.where(top, np.where(mantissa == 0, sign * np.inf, np.nan), value)
    return value.astype(np.float32)


def quantize(fmt, x, scale):
    """What an FP8 cast with `scale` stores for x, as fp32: round_to(fmt, x * scale)."""
    return round_to(fmt, np.asarray(x, dtype=np.float32) * np.float32(scale))


def scaled_matmul(a, a_scale, a_fmt, b, b_scale, b_fmt):
    """a (M, K) @ b (K, N) as the FP8 path computes it: both operands quantized with their scales,
    the product of the FP8 values summed exactly (fp64 here; fp32 on the tensor cores), then
    divided by both scales. Returns fp64 (M, N); the GPU rounds it to bf16 once."""
    qa = quantize(a_fmt, a, a_scale).astype(np.float64)
    qb = quantize(b_fmt, b, b_scale).astype(np.float64)
    return qa @ qb / (np.float64(a_scale) * np.float64(b_scale))


def matmul_error_bound(a, a_fmt, b, b_fmt):
    """The largest |FP8 product - exact product| per output element, for operands whose scaled
    values are normal numbers of their formats: each operand's rounding is at most half a step
    relative, so |error| <= (ua + ub + ua ub) sum_k |a_ik| |b_kj|. (Values in the subnormal range
    lose more; scales that put the largest |x| near the format's max keep them out of it for all
    but the smallest elements, whose products hardly count.)"""
    ua, ub = a_fmt.step / 2, b_fmt.step / 2
    return (ua + ub + ua * ub) * (np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64)))


def next_scales(history, fmt, scales, margin=0):
    """Each tensor's scale for the next step from its history of largest |x| (tensors, length):
    max_of_format / max(history) / 2^margin, in fp32 as the GPU computes it. A tensor whose
    history holds only zeros (not yet seen, or all zero) or a non-finite value keeps its scale:
    a NaN step must not poison the casts that follow (the run's own non-finite checks stop it)."""
    amax = np.asarray(history, dtype=np.float32).max(axis=1)
    usable = np.isfinite(amax) & (amax > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fresh = (np.float32(fmt.max) / amax * np.float32(2.0 ** -margin)).astype(np.float32)
    return np.where(usable, fresh, np.asarray(scales, dtype=np.float32)).astype(np.float32)


def push_amax(history, amax):
    """The history after a step: every tensor's row shifted by one, this step's largest |x| in
    front (a shift register rather than a ring buffer: the update needs no step counter, so the
    CUDA graph of the step replays it unchanged)."""
    history = np.asarray(history, dtype=np.float32)
    return np.concatenate([np.asarray(amax, np.float32)[:, None], history[:, :-1]], axis=1)
