"""The fused classifier: softmax cross-entropy forward and backward in one kernel, dlogits written
in place over the logits (kernels/classifier.cu; earlier versions in dev/cuda/classifier.cu).

    python dev/cuda/classifier.py [version...]     # check against llmpy/cpu.py, then time

Versions:
  1  three passes (max, sum of exponentials, dlogits) with 2-byte loads: reads each row 3 times
  2  online softmax (max and sum in one pass), 128-bit loads, pass 1 walks the row backwards so
     that pass 2's reads hit L2 where the row is still there, streaming stores of dlogits
  3  kernels/classifier.cu: the row kept in shared memory between the passes (two 100 KB rows per
     SM), so it is read from DRAM once; exponentials as 2^(x log2 e - m log2 e), one FFMA and one
     MUFU.EX2 each instead of expf's ~10 instructions; 4 loads in flight per thread in pass 1
Timed at GPT-2 124M's shape, B*T = 65536 rows of Vp = 50304 (6.6 GB of bf16 logits), per block
size; then PyTorch's F.cross_entropy forward + backward over the same logits where torch is
installed. GB/s counts what the fused kernel must move: one read and one write of the logits
(versions 1 and 2 read them two or three times).
"""
import functools

import cupy as cp
import numpy as np
from common import (bf16, dev_module, gpu, host, median_ms, print_table, randn, rel_error,
                    selected_versions)

from llmpy import cpu
from llmpy.cuda.classifier import classifier_forward_backward

V, Vp = 50257, 50304
B, T = 64, 1024            # timed
CHECK_B, CHECK_T = 4, 16   # checked against NumPy
BLOCKS = (256, 512, 1024)
# dlogits are stored in bf16: one rounding, <= 2^-9 of each value; losses stay fp32
TOL = {"dlogits": 2.0**-8, "losses": 1e-5}


@functools.cache
def dev_kernel(version):
    return dev_module("classifier").get_function(f"classifier_forward_backward_v{version}")


def v1(logits, losses, targets, dloss, block):
    dev_kernel(1)((losses.size,), (block,),
                  (logits, losses, targets, np.int32(V), np.int32(Vp), np.float32(dloss)))


def v2(logits, losses, targets, dloss, block):
    T = targets.shape[1]
    dev_kernel(2)((losses.size,), (block,), (logits, losses, targets, np.int32(T), np.int32(T),
                                             np.int32(V), np.int32(Vp), np.float32(dloss)))


def v3(logits, losses, targets, dloss, block):
    classifier_forward_backward(logits, losses, targets, V, dloss, block=block)


VERSIONS = {1: v1, 2: v2, 3: v3}


def check(rng, run):
    logits = randn(rng, CHECK_B, CHECK_T, Vp, scale=2.0)
    logits[..., V:] = np.nan                   # padding is never read
    targets = rng.integers(0, V, size=(CHECK_B, CHECK_T)).astype(np.int32)
    targets[0, 0], targets[-1, -1] = 0, V - 1
    dloss = 1.0 / (CHECK_B * CHECK_T)
    d_logits, d_losses = gpu(logits), cp.full((CHECK_B, CHECK_T), np.nan, dtype=np.float32)
    run(d_logits, d_losses, cp.asarray(targets), dloss, 1024)
    losses = np.empty((CHECK_B, CHECK_T), dtype=np.float32)
    cpu.classifier_forward_backward(logits, losses, targets, V, dloss)
    return {"dlogits": rel_error(host(d_logits), logits),
            "losses": rel_error(host(d_losses), losses)}


def timing_logits(rng, rows):
    """(rows, Vp) bf16 logits: 1024 random rows, repeated (the kernels' speed is data-blind)."""
    unique = gpu(randn(rng, 1024, Vp, scale=2.0)).view(np.uint16)
    logits = cp.empty((rows // 1024, 1024, Vp), dtype=np.uint16)
    logits[...] = unique
    return logits.reshape(rows, Vp).view(bf16)


def torch_row(logits, targets, nbytes):
    """F.cross_entropy forward + backward, over all Vp columns, contiguous (as nanoGPT does)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    x = torch.from_dlpack(logits.view(np.int16)).view(torch.bfloat16)
    t = torch.from_dlpack(targets).long().reshape(-1)

    def run():
        xg = x.detach().requires_grad_()
        F.cross_entropy(xg, t).backward()
    ms = median_ms(run)
    return ("torch F.cross_entropy", "-", f"{ms:.3f}", f"{nbytes / ms / 1e6:.0f}")


def main():
    rng = np.random.default_rng(0)
    versions = selected_versions(VERSIONS)
    for version in versions:
        for name, err in check(rng, VERSIONS[version]).items():
            print(f"version {version} {name}: relative error {err:.2e} "
                  f"{'ok' if err < TOL[name] else 'FAIL'}")
    rows_n = B * T
    logits = timing_logits(rng, rows_n)
    logits_btv = logits.reshape(B, T, Vp)
    targets = cp.asarray(rng.integers(0, V, size=(B, T)).astype(np.int32))
    losses = cp.empty((B, T), dtype=np.float32)
    nbytes = 2 * logits.nbytes
    rows = []
    # each run overwrites the logits with dlogits and the next runs on those: finite values,
    # and the timing does not depend on them
    for version in versions:
        run = VERSIONS[version]
        for block in BLOCKS:
            ms = median_ms(lambda: run(logits_btv, losses, targets, 1.0 / rows_n, block))
            rows.append((version, block, f"{ms:.3f}", f"{nbytes / ms / 1e6:.0f}"))
    reference = torch_row(logits, targets, nbytes)
    if reference:
        rows.append(reference)
    print(f"\nB*T = {rows_n:,} rows x Vp = {Vp} (V = {V}): {logits.nbytes / 1e9:.1f} GB of logits")
    print_table(rows, ["version", "block", "ms", "GB/s"])


if __name__ == "__main__":
    main()
