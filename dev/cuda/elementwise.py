"""GELU forward/backward and the residual add (kernels/gelu.cu, kernels/residual.cu).

    python dev/cuda/elementwise.py        # check against llmpy/cpu.py, then time

Versions (one so far): 1 = one thread per 8 bf16 elements, 128-bit loads and stores, fp32 math;
these kernels are memory-bound, so the figure of merit is GB/s against the ~4.3 TB/s copy rate.
"""
import numpy as np
from common import gpu, host, median_ms, poisoned, print_table, randn, rel_error, selected_versions

from llmpy import cpu
from llmpy.cuda import elementwise

B, T, C = 8, 1024, 768
N = B * T * 4 * C      # the MLP's hidden activation, where GELU runs

# bf16 output: one rounding of a value computed in fp32, relative error <= 2^-9 of the value
TOL = 1e-2
VERSIONS = {1: elementwise}


def check(rng):
    x, d = randn(rng, N, scale=3.0), randn(rng, N)
    ref = np.empty_like(x)
    cpu.gelu_forward(ref, x)
    out = poisoned(N)
    elementwise.gelu_forward(out, gpu(x))
    errors = {"gelu_forward": rel_error(host(out), ref)}
    cpu.gelu_backward(ref, x, d)
    out = poisoned(N)
    elementwise.gelu_backward(out, gpu(x), gpu(d))
    errors["gelu_backward"] = rel_error(host(out), ref)
    out = poisoned(N)
    elementwise.residual_forward(out, gpu(x), gpu(d))
    errors["residual_forward"] = rel_error(host(out), x + d)
    return errors


def main():
    rng = np.random.default_rng(0)
    for version in selected_versions(VERSIONS):
        for name, err in check(rng).items():
            print(f"version {version} {name}: relative error {err:.2e} {'ok' if err < TOL else 'FAIL'}")
    x, d, out = gpu(randn(rng, N)), gpu(randn(rng, N)), poisoned(N)
    rows = []
    for name, fn, nbytes in [("gelu_forward", lambda: elementwise.gelu_forward(out, x), 2 * 2 * N),
                             ("gelu_backward", lambda: elementwise.gelu_backward(out, x, d), 3 * 2 * N),
                             ("residual_forward", lambda: elementwise.residual_forward(out, x, d), 3 * 2 * N)]:
        ms = median_ms(fn)
        rows.append((name, f"{ms:.3f}", f"{nbytes / ms / 1e6:.0f}"))
    print(f"\n{N:,} bf16 elements (B={B}, T={T}, 4C={4 * C})")
    print_table(rows, ["kernel", "ms", "GB/s"])


if __name__ == "__main__":
    main()
