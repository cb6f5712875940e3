"""LayerNorm kernels, each version checked against llmpy.cpu and timed at GPT-2 124M shapes.
python dev/cuda/layernorm.py [version...]

  1  forward: one warp per row; mean, then the variance of x - mean (no cancellation), the
     row re-read from L1                                                   kernels/layernorm.cu
  2  backward: one warp per row; dweight/dbias as per-block fp32 partials, summed in block
     order by a second kernel (deterministic); each lane's dweight/dbias sums in shared memory
     (layernorm_backward_shared, now llmpy's backward for C > 768)       kernels/layernorm.cu
  3  residual add fused into the forward: residual = a + b, then version 1 on it, the warp's
     row kept in shared memory: a and b read once, 8 bytes moved per element against 10 for
     residual_forward then version 1 (timed too, as "1+res")             kernels/layernorm.cu
  4  (llmpy's for C <= 768) backward with the row in registers: dout, x, dinp loaded once and
     together, dweight/dbias summed in fp32 registers, one wave of 16 warps an SM: faster than
     2 by moving each byte once and no shared-memory traffic per row     kernels/layernorm.cu
  5  version 4 with each warp's rows streamed through a two-stage cp.async pipeline in shared
     memory (the next row in flight while the warp computes): not faster dev/cuda/layernorm_v5.cu
  6  (llmpy's in the model) version 4 also summing the columns of dinp as it stores them: the
     bias gradient of the projection that dinp feeds, without that projection's own pass over
     dinp (154 registers: 12 warps an SM)                               kernels/layernorm.cu

GB/s counts the bytes each op must move: forward reads x and writes out (+ mean, rstd);
backward reads dout, x and dinp and writes dinp (+ mean, rstd); the fused forward reads a, b
and writes residual, out (+ mean, rstd).
"""
import cupy as cp
import numpy as np
from common import (DEV_DIR, bf16, gpu, host, median_ms, poisoned, print_table, randn, rel_error,
                    selected_versions)

from llmpy import cpu
from llmpy.cuda import elementwise, layernorm
from llmpy.cuda.runtime import ceil_div, launch, workspace

C = 768
TOL = 1e-2   # bf16 outputs: 8-bit significand, rounding error <= 2^-8 = 4e-3 of a value


def rounded(a):
    return a.astype(bf16).astype(np.float32)


def forward_inputs(rng, B, T):
    # an offset and a scale, as in the residual stream (rounded again: shifted bf16 values are
    # not all bf16 values)
    x, w = rounded(randn(rng, B, T, C, scale=3.0) + 2.0), rounded(randn(rng, C, scale=0.5) + 1.0)
    return x, w, randn(rng, C)


def check_forward(fn, rng, B, T):
    x, w, b = forward_inputs(rng, B, T)
    ref = np.empty_like(x)
    ref_mean, ref_rstd = np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(ref, ref_mean, ref_rstd, x, w, b)
    out = poisoned(B, T, C)
    mean, rstd = poisoned(B, T, dtype=np.float32), poisoned(B, T, dtype=np.float32)
    fn(out, mean, rstd, gpu(x), gpu(w), gpu(b))
    return {"out": rel_error(host(out), ref), "mean": rel_error(host(mean), ref_mean),
            "rstd": rel_error(host(rstd), ref_rstd)}


def check_backward(fn, rng, B, T):
    x, w, _ = forward_inputs(rng, B, T)
    mean = x.mean(-1)
    rstd = 1.0 / np.sqrt(((x - mean[..., None]) ** 2).mean(-1) + cpu.LN_EPS)
    mean, rstd = mean.astype(np.float32), rstd.astype(np.float32)
    # dout correlated with n and offset per row, so that every term of dx counts
    norm = (x - mean[..., None]) * rstd[..., None]
    dout = rounded(randn(rng, B, T, C) + 0.5 * norm + randn(rng, B, T, 1))
    dinp, dw, db = randn(rng, B, T, C), randn(rng, C), randn(rng, C)   # accumulated into
    ref_dinp, ref_dw, ref_db = dinp.copy(), dw.copy(), db.copy()
    cpu.layernorm_backward(ref_dinp, ref_dw, ref_db, dout, x, w, mean, rstd)
    g_dinp, g_dw, g_db = gpu(dinp), gpu(dw), gpu(db)
    fn(g_dinp, g_dw, g_db, gpu(dout), gpu(x), gpu(w), cp.asarray(mean), cp.asarray(rstd))
    return {"dinp": rel_error(host(g_dinp), ref_dinp), "dweight": rel_error(host(g_dw), ref_dw),
            "dbias": rel_error(host(g_db), ref_db)}


def check_residual_forward(fn, rng, B, T):
    a, w, bias = forward_inputs(rng, B, T)
    branch = randn(rng, B, T, C)
    residual_ref = rounded(a + branch)       # the kernel normalizes the bf16-rounded sum
    ref = np.empty_like(a)
    ref_mean, ref_rstd = np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(ref, ref_mean, ref_rstd, residual_ref, w, bias)
    residual, out = poisoned(B, T, C), poisoned(B, T, C)
    mean, rstd = poisoned(B, T, dtype=np.float32), poisoned(B, T, dtype=np.float32)
    fn(residual, out, mean, rstd, gpu(a), gpu(branch), gpu(w), gpu(bias))
    # the -r 2 backward recomputes the layernorm with version 1: it must give the same bits
    out1 = poisoned(B, T, C)
    layernorm.layernorm_forward(out1, poisoned(B, T, dtype=np.float32),
                                poisoned(B, T, dtype=np.float32), residual, gpu(w), gpu(bias))
    same_bits = np.array_equal(cp.asnumpy(out1).view(np.uint16), cp.asnumpy(out).view(np.uint16))
    return {"residual": rel_error(host(residual), residual_ref), "out": rel_error(host(out), ref),
            "mean": rel_error(host(mean), ref_mean), "rstd": rel_error(host(rstd), ref_rstd),
            "bits unlike version 1's": 0.0 if same_bits else np.inf}


def unfused(residual, out, mean, rstd, a, b, weight, bias, block_size):
    """What version 3 replaces: residual_forward, then version 1."""
    elementwise.residual_forward(residual, a, b)
    layernorm.layernorm_forward(out, mean, rstd, residual, weight, bias, block_size=block_size)


def backward_v5(dinp, dweight, dbias, dout, inp, weight, mean, rstd, block_size=128):
    """Version 5 (C <= 768), launched as llmpy launches version 4."""
    C = weight.size
    N, warps = inp.size // C, block_size // 32
    blocks = min(layernorm._sm_count(cp.cuda.Device().id) * (512 // block_size),
                 ceil_div(N, warps))
    partials = workspace("layernorm_partials", blocks * 2 * C, np.float32)
    launch(DEV_DIR / "layernorm_v5.cu", "layernorm_backward", blocks, block_size,
           dinp, partials, dout, inp, weight, mean, rstd, N, C,
           shared_mem=warps * 2 * (6 * C + 16))   # two stages of stage_bytes(C) a warp
    launch("layernorm", "layernorm_backward_params", ceil_div(2 * C, 32), (32, 32),
           dweight, dbias, None, partials, blocks, C, 2)


def backward_v6(dinp, dweight, dbias, dout, inp, weight, mean, rstd, block_size=None):
    """Version 6: version 4 also summing the columns of dinp (here into a scratch vector; in the
    model, the next projection's bias gradient)."""
    sums = workspace("dev_layernorm_dinp_sums", weight.size, bf16)
    layernorm.layernorm_backward_sums(dinp, dweight, dbias, dout, inp, weight, mean, rstd, sums,
                                      block_size=block_size)


# version: (op, function, check)
VERSIONS = {1: ("forward", layernorm.layernorm_forward, check_forward),
            2: ("backward", layernorm.layernorm_backward_shared, check_backward),
            3: ("residual+forward", layernorm.residual_layernorm_forward, check_residual_forward),
            4: ("backward", layernorm.layernorm_backward, check_backward),
            5: ("backward", backward_v5, check_backward),
            6: ("backward", backward_v6, check_backward)}
# block sizes timed; versions 4 and 5 take at most 512 threads a block, 6 384 (launch bounds)
BLOCKS = {4: (64, 128, 256, 512), 5: (64, 128, 256, 512), 6: (64, 128, 384)}


def main():
    picked = selected_versions(VERSIONS)
    rng = np.random.default_rng(0)
    for v in picked:
        op, fn, check = VERSIONS[v]
        errors = check(fn, rng, 4, 1024)
        worst = max(errors.values())
        print(f"version {v} ({op}): " + ", ".join(f"{k} {e:.2e}" for k, e in errors.items())
              + ("  OK" if worst <= TOL else "  FAILED"))
    T, Bmax = 1024, 64
    x_all, dout_all = gpu(randn(rng, Bmax, T, C)), gpu(randn(rng, Bmax, T, C))
    out_all, dinp_all = poisoned(Bmax, T, C), cp.zeros((Bmax, T, C), x_all.dtype)
    residual_all = poisoned(Bmax, T, C)
    w, b = gpu(randn(rng, C)), gpu(randn(rng, C))
    dw, db = cp.zeros(C, w.dtype), cp.zeros(C, w.dtype)
    mean_all, rstd_all = cp.zeros((Bmax, T), np.float32), cp.ones((Bmax, T), np.float32)
    rows = []
    timed = [(v, *VERSIONS[v][:2]) for v in picked]
    if 3 in picked:
        timed.append(("1+res", "residual, forward", unfused))
    for v, op, fn in timed:
        for B in (8, 64):
            x, dout, out, dinp = x_all[:B], dout_all[:B], out_all[:B], dinp_all[:B]
            residual, mean, rstd = residual_all[:B], mean_all[:B], rstd_all[:B]
            N = B * T
            nbytes = (2 if op == "forward" else 4) * N * C * 2 + N * 8
            for block in BLOCKS.get(v, (64, 128, 256, 512, 1024)):
                if op == "forward":
                    ms = median_ms(lambda: fn(out, mean, rstd, x, w, b, block_size=block))
                elif op == "backward":
                    ms = median_ms(lambda: fn(dinp, dw, db, dout, x, w, mean, rstd, block_size=block))
                else:     # the residual add and the forward: x + dout, fused or not
                    ms = median_ms(lambda: fn(residual, out, mean, rstd, x, dout, w, b,
                                            block_size=block))
                rows.append((v, op, B, block, f"{ms:.4f}", f"{nbytes / ms / 1e6:.0f}"))
    print_table(rows, ["version", "op", "B", "block", "ms", "GB/s"])


if __name__ == "__main__":
    main()
