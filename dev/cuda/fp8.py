"""FP8 linear layers: the three products of GPT-2's four per-layer matmuls in FP8 through
cuBLASLt (llmpy/cuda/fp8.py) against the bf16 products the model runs today
(llmpy/cuda/matmul.py), and what the casts (kernels/fp8.cu) cost.

    python dev/cuda/fp8.py [version...]     # check against llmpy/fp8.py, then time

A layer's forward, dinp and dweight products (out = inp W^T; dinp = dout W; dW += dout^T inp):
  1  bf16 (llmpy/cuda/matmul.py without bias): what the model runs
  2  FP8, operands already cast (E4M3 inp and W, E5M2 dout), both K-major as cuBLASLt's FP8
     wants them; the forward with fast accumulation: the ceiling of FP8 if every cast and
     transpose were fused into the kernel that produces its tensor
  3  version 2 with no fast accumulation anywhere (partial sums promoted to fp32 every few k)
  4  version 2 plus the casts it needs, by kernels/fp8.cu: inp and dout each cast and transposed
     in one pass (cast_transpose), W cast and transposed once a step (counted here once per
     product set, as the model would after each update): the cost of unfused casts
Checks, on CHECK_N rows: each FP8 product against llmpy.fp8.scaled_matmul (the reference's
product of the same FP8 values: bf16 rounding apart, 1e-2 of the output's scale) and against the
exact product of the unquantized inputs (within llmpy.fp8.matmul_error_bound); the bf16 product's
error against the exact one is printed beside it.
Shapes: d12's four matmuls at B*T = 65536 rows; TFLOP/s counts 2*N*C*OC per product. The last
table adds up the per-layer saving over 12 layers against the bf16 step's matmul time.
"""
import cupy as cp
import numpy as np
from common import bf16, host, median_ms, print_table, randn, selected_versions

from llmpy import fp8
from llmpy.cuda import fp8 as cuda_fp8
from llmpy.cuda import matmul
from llmpy.testing.fp8 import Operand

N = 64 * 1024           # B*T rows, timed
CHECK_N = 512           # rows checked against NumPy
C = 768
LAYERS = 12
SHAPES = [("qkv", C, 3 * C), ("attproj", C, C), ("fc", C, 4 * C), ("fcproj", 4 * C, C)]
TOL = 1e-2
VERSIONS = {1: "bf16", 2: "fp8, operands cast", 3: "fp8, no fast accumulation",
            4: "fp8 + unfused casts"}


def layer(rng, rows, c_in, c_out):
    inp = Operand(randn(rng, rows, c_in), fp8.E4M3)
    weight = Operand(randn(rng, c_out, c_in, scale=0.02), fp8.E4M3)
    dout = Operand(randn(rng, rows, c_out, scale=1e-4), fp8.E5M2)
    return inp, weight, dout


def fp8_products(inp, weight, dout, out, dinp, dweight, fast_accum=True):
    cuda_fp8.forward(out, inp.q, inp.inv, weight.q, weight.inv, fast_accum=fast_accum)
    cuda_fp8.backward_inp(dinp, dout.q, dout.inv, weight.q_t, weight.inv)
    cuda_fp8.backward_weight(dweight, dout.q_t, dout.inv, inp.q_t, inp.inv)


def bf16_products(inp, weight, dout, out, dinp, dweight):
    matmul.matmul_forward(out, inp.bf16, weight.bf16, None)
    matmul.matmul_backward(dinp, dweight, None, dout.bf16, inp.bf16, weight.bf16)


def run(version, inp, weight, dout, out, dinp, dweight):
    if version == 1:
        bf16_products(inp, weight, dout, out, dinp, dweight)
        return
    if version == 4:
        inp.cast()
        weight.cast()
        dout.cast()
    fp8_products(inp, weight, dout, out, dinp, dweight, fast_accum=version != 3)


def check(rng, version, c_in, c_out):
    """(largest error against the reference's product of the same operands / its scale, largest
    error against the exact product / the stated bound there) over forward, dinp and dweight."""
    inp, weight, dout = layer(rng, CHECK_N, c_in, c_out)
    out, dinp = cp.full((CHECK_N, c_out), np.nan, bf16), cp.full((CHECK_N, c_in), np.nan, bf16)
    dweight = cp.zeros((c_out, c_in), bf16)
    run(version, inp, weight, dout, out, dinp, dweight)
    worst_ref, worst_bound = 0.0, 0.0
    # (product, a, b): each as (values, format, scale) of its two operands
    for got, a, b in [(out, (inp, False), (weight, True)), (dinp, (dout, False), (weight, False)),
                      (dweight, (dout, True), (inp, False))]:
        (a_op, a_t), (b_op, b_t) = a, b
        a_vals = a_op.values.T if a_t else a_op.values
        b_vals = b_op.values.T if b_t else b_op.values
        exact = a_vals.astype(np.float64) @ b_vals
        reference = exact if version == 1 else \
            fp8.scaled_matmul(a_vals, a_op.scale_value, a_op.fmt, b_vals, b_op.scale_value, b_op.fmt)
        scale = np.abs(reference).max()
        worst_ref = max(worst_ref, np.abs(host(got) - reference).max() / scale)
        bound = fp8.matmul_error_bound(a_vals, a_op.fmt, b_vals, b_op.fmt) + TOL * scale
        worst_bound = max(worst_bound, (np.abs(host(got) - exact) / bound).max())
    return worst_ref, worst_bound


def main():
    versions = selected_versions(VERSIONS)
    rng = np.random.default_rng(0)
    rows = []
    for name, c_in, c_out in SHAPES:
        for version in versions:
            err, of_bound = check(rng, version, c_in, c_out)
            ok = err <= TOL and (version == 1 or of_bound <= 1)
            rows.append((name, version, VERSIONS[version], f"{err:.2e}", f"{of_bound:.2f}",
                         "ok" if ok else "FAIL"))
    print("checks: error against the reference product of the same operands (/ output scale), "
          "and |error| against the exact product as a fraction of the FP8 bound")
    print_table(rows, ["matmul", "version", "what", "err", "of bound", ""])

    rows, per_layer = [], {v: 0.0 for v in versions}
    for name, c_in, c_out in SHAPES:
        inp, weight, dout = layer(rng, N, c_in, c_out)
        out, dinp = cp.empty((N, c_out), bf16), cp.empty((N, c_in), bf16)
        dweight = cp.zeros((c_out, c_in), bf16)
        flops = 3 * 2 * N * c_in * c_out
        for version in versions:
            ms = median_ms(lambda: run(version, inp, weight, dout, out, dinp, dweight))
            per_layer[version] += ms
            rows.append((name, f"{N}x{c_in}->{c_out}", version, f"{ms:.3f}",
                         f"{flops / ms / 1e9:.0f}"))
    print(f"\nthe three products of each matmul, B*T = {N} (TFLOP/s over the three)")
    print_table(rows, ["matmul", "shape", "version", "ms", "TFLOP/s"])
    base = per_layer.get(1)
    print(f"\nover {LAYERS} layers (ms a step; the saving against version 1 where it ran)")
    print_table([(v, VERSIONS[v], f"{LAYERS * ms:.2f}",
                  f"{LAYERS * (base - ms):.2f}" if base is not None else "-")
                 for v, ms in per_layer.items()], ["version", "what", "ms", "saved"])


if __name__ == "__main__":
    main()
