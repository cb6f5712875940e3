"""Causal self-attention forward and backward.

    python dev/cuda/attention.py [version...]     # check against llmpy/cpu.py, then time

Versions 1-3 materialize the (T, T) attention matrix (dev/cuda/attention_simple.py with its
keywords set, kernels in dev/cuda/attention.cu); 4-13 are flash attention, 13 is llmpy's.
Versions 1-9 are frozen whole, each built from dev/cuda files alone (the .cu files include
kernels/common.cuh and flash_attention.cuh for their helpers); 10-13 are live, built from
today's kernels/flash_attention*.cu.
Versions 10-13 share llmpy's softmax exponentials: one FFMA and ex2.approx.ftz a probability (no
exp2f range fix-ups); 4-9 use exp2f, as when they were measured:
  1  llm.c's train_gpt2.cu before cuDNN: permute qkv into per-head q, k, v; preatt = q k^T and
     y = att v as cuBLAS strided-batched gemms over all B*NH heads and the whole (T, T) matrix;
     a one-warp-per-row online softmax in place, one bf16 per load; the (B, NH, T, T) attention
     matrix is materialized (and saved for the backward, which mirrors it: four gemms and a
     softmax backward)
  2  128-bit softmaxes (T % 8 == 0): 16 bytes per load and store instead of 2, keys past t
     never read, only written (as zeros)
  3  causal gemms: one gemm per block of row_block query rows over the keys up to the block's
     end (5/8 of the matrix at row_block = 256), and the softmax backward writes dpreatt's zeros
     only as far as those blocks read; timed per row_block
  4  flash attention (FlashAttention-2's algorithm) on bf16 tensor cores, mma.sync m16n8k16
     (dev/cuda/flash_attention_v4.cu): 64-row tiles of queries stream the keys through shared
     memory with an online softmax, the probabilities never leave registers and skip the tiles
     above the diagonal; only the log-sum-exp per row is saved. The backward recomputes the
     probabilities: one kernel per key tile for dK and dV, one per query tile for dQ (no
     atomics). No (T, T) traffic at all.
  5  version 7's forward (below), and one backward kernel per key tile computes dK, dV and its
     part of dQ, added into an fp32 accumulator in a fixed order of key tiles (a counter per
     query tile; still no float atomics): 5 tile products per tile pair instead of 7
     (dev/cuda/flash_attention_v5.cu).
     Every operand fragment comes from shared memory by ldmatrix (4x fewer load instructions
     than 32-bit loads), the next tile's copy (cp.async) runs while the current one is used.
     Slower than 4 all the same: each tile pair now waits on the ordered read-add-write of dQ
     through L2 and a memory fence, at only 2 blocks per SM (246 registers)
  6  version 5 with its backward compiled for 3 blocks per SM (168 registers)
  7  version 4's two backward kernels and forward with version 5's ldmatrix fragments and
     double-buffered cp.async tiles, the dK/dV kernel compiled for 3 blocks per SM (168
     registers, a few spills); its dQ kernel recomputes S and dP (dev/cuda/flash_attention_v7.cu)
  8  version 7 with its dK/dV kernel at 2 blocks per SM (244 registers, none spilled)
  9  version 7 with its forward capped for 4 blocks per SM (128 registers) instead of 3
 10  llmpy's off Hopper (kernels/flash_attention.cu): version 7 whose dK/dV kernel also stores
     each tile pair's dS (bf16, 855 MB at B=64; staged in shared memory so that every store is a
     whole 128-byte line), so that the dQ kernel does one product per tile pair, dS K, instead of
     recomputing S and dP: 5 tile products instead of 7, no atomics; the delta kernel reads 16
     bytes a lane (8 lanes a row) instead of 4
 11  version 10 with the forward and the dK/dV kernel on wgmma
     (kernels/flash_attention_wgmma.cu): the products read their shared-memory operands (tiles
     in the 128-byte swizzle) once per warpgroup instead of once per warp, and run
     asynchronously. Forward: two warpgroups of 64 query rows share each K/V tile. dK/dV: one
     warpgroup of 64 keys a block, 2 blocks per SM (208 registers); dV's product overlaps dS's
     arithmetic and dK's the dS stores; the same bits as version 10's dK/dV kernel. Both
     double-buffered (compiled with FWD_STAGES=2, BWD_STAGES=2; until version 13 they took two
     barriers a tile, now one)
 12  version 11 with the dQ kernel on wgmma too: dS and K read from shared memory once per
     warpgroup, two warpgroups (query tiles) sharing each K tile, 4 stages of cp.async copies in
     flight, one barrier a key tile instead of two; the same bits
 13  llmpy's on Hopper: version 12 with the forward and the dK/dV kernel given dQ's pipeline:
     3 stages of streamed tiles, so that a tile's copy starts a whole tile before it is waited
     for; the same bits as version 12, and its speed within ~1% either way (the end-to-end step
     0.3 ms faster, two alternating runs on one machine)
Timed at GPT-2 124M's NH = 12, hs = 64, T = 1024 for B = 8..64, forward and forward + backward
(backward: their difference), against PyTorch's flash attention (F.scaled_dot_product_attention)
on the same qkv, with nanoGPT's head split and merge around it, where torch is installed.
"""
import functools
import math
from types import SimpleNamespace

import cupy as cp
import numpy as np
from common import (DEV_DIR, bf16, gpu, host, median_ms, poisoned, print_table, randn, rel_error,
                    selected_versions)

import attention_simple as simple
from llmpy import cpu
from llmpy.cuda import flash_attention
from llmpy.cuda.runtime import ceil_div, kernel, launch, workspace

NH, HS, T = 12, 64, 1024
BATCHES = (8, 16, 32, 64)
# (B, T, NH, hs): GPT-2's heads, a T that is not a multiple of 8 (the sampler's), GPT-2's T
CHECKS = [(4, 256, NH, HS), (2, 37, 4, 64), (1, 1024, 2, 64)]
# preatt, att, the outputs (and datt, dpreatt backward) are each rounded to bf16 (<= 2^-8 of a
# value); a NumPy emulation of that chain gives ~5e-3 forward and ~6e-3 backward of the scale
TOL = {"out": 1e-2, "att": 1e-2, "dq": 2e-2, "dk": 2e-2, "dv": 2e-2}
V4 = DEV_DIR / "flash_attention_v4.cu"


def v4_forward(out, lse, qkv, nh):
    B, T_, _ = qkv.shape
    launch(V4, "flash_attention_forward", (ceil_div(T_, 64), B * nh), 128,
           out, lse, qkv, T_, nh, flash_attention.LOG2E / math.sqrt(HS))


def v4_backward(dqkv, dout, qkv, out, lse, nh):
    B, T_, _ = qkv.shape
    delta = v7_delta(dout, out, B, T_, nh)        # version 4's delta kernel, unchanged until 10
    scale = 1 / math.sqrt(HS)
    for name in ("flash_attention_backward_dkdv", "flash_attention_backward_dq"):
        launch(V4, name, (ceil_div(T_, 64), B * nh), 128,
               dqkv, dout, qkv, lse, delta, T_, nh, scale, scale * flash_attention.LOG2E)


V5 = DEV_DIR / "flash_attention_v5.cu"


def v5_backward(dqkv, dout, qkv, out, lse, nh, source=V5):
    B, T_, _ = qkv.shape
    tiles = ceil_div(T_, 64)
    dq_accum = cp.empty(B * nh * tiles * 64 * 64, np.float32)
    counter = cp.zeros(B * nh * tiles, np.uint32)
    delta = v7_delta(dout, out, B, T_, nh)
    shared = 7 * flash_attention.TILE_BYTES + 4 * 64 * 4
    scale = 1 / math.sqrt(HS)
    launch(source, "flash_attention_backward", (tiles, B * nh), 128, dqkv, dq_accum, counter,
           dout, qkv, lse, delta, T_, nh, scale, scale * flash_attention.LOG2E, shared_mem=shared)


def variant(forward, backward):
    return SimpleNamespace(attention_saved=flash_attention.attention_saved,
                           attention_forward=forward, attention_backward=backward)


V5_THREE = (V5, ("-DBACKWARD_BLOCKS_PER_SM=3",))
# versions 7-9 whole, every kernel from their own file (8 and 9 recompiled with the macros)
V7 = DEV_DIR / "flash_attention_v7.cu"
V7_TWO = (V7, ("-DDKDV_BLOCKS_PER_SM=2",))
V7_FOUR = (V7, ("-DFORWARD_BLOCKS_PER_SM=4",))
# version 7's shared memory: 2 resident tiles and 2 x 2 streamed ones, plus (dK/dV) the streamed
# rows' lse and delta twice
V7_DKDV_SMEM = 6 * flash_attention.TILE_BYTES + 4 * 64 * 4
V7_DQ_SMEM = 6 * flash_attention.TILE_BYTES


def v7_forward(out, lse, qkv, nh, source=V7):
    B, T_, _ = qkv.shape
    launch(source, "flash_attention_forward", (ceil_div(T_, 64), B * nh), 128,
           out, lse, qkv, T_, nh, flash_attention.LOG2E / math.sqrt(HS))


def v7_delta(dout, out, B, T_, nh, source=V7):
    """Version 7's delta kernel: a warp a row, 4 bytes a lane."""
    delta = cp.empty((B, nh, T_), np.float32)
    launch(source, "flash_attention_delta", ceil_div(B * nh * T_, 8), 256, delta, dout, out, B, T_, nh)
    return delta


def v7_backward(dqkv, dout, qkv, out, lse, nh, source=V7):
    """Version 7's delta, then its dK/dV kernel and its dQ kernel, each recomputing P."""
    B, T_, _ = qkv.shape
    delta = v7_delta(dout, out, B, T_, nh, source)
    scale = 1 / math.sqrt(HS)
    grid = (ceil_div(T_, 64), B * nh)
    for name, shared in (("flash_attention_backward_dkdv", V7_DKDV_SMEM),
                         ("flash_attention_backward_dq", V7_DQ_SMEM)):
        launch(source, name, grid, 128, dqkv, dout, qkv, lse, delta, T_, nh, scale,
               scale * flash_attention.LOG2E, shared_mem=shared)


# llmpy's wgmma kernels with double buffers (versions 11 and 12)
WGMMA_DOUBLE = ("flash_attention_wgmma", ("-DFWD_STAGES=2", "-DBWD_STAGES=2"))


def v11_forward(out, lse, qkv, nh):
    B, T_, _ = qkv.shape
    launch(WGMMA_DOUBLE, "flash_attention_forward_wgmma",
           (ceil_div(T_, flash_attention.WGMMA_ROWS), B * nh), flash_attention.WGMMA_THREADS,
           out, lse, qkv, T_, nh, flash_attention.LOG2E / math.sqrt(HS),
           shared_mem=flash_attention.wgmma_forward_smem(2))


def v11_backward(dqkv, dout, qkv, out, lse, nh, dq_wgmma=False):
    """llmpy's delta kernel, the double-buffered wgmma dK/dV kernel, then version 10's
    (mma.sync) dQ kernel or (dq_wgmma) llmpy's wgmma one."""
    B, T_, _ = qkv.shape
    tiles = ceil_div(T_, 64)
    delta = flash_attention.backward_delta(dout, out, B, T_, nh)
    ds = workspace("flash_attention_ds", B * nh * tiles * (tiles + 1) // 2 * 64 * 64, bf16)
    scale = 1 / math.sqrt(HS)
    grid = (tiles, B * nh)
    launch(WGMMA_DOUBLE, "flash_attention_backward_dkdv_wgmma", grid, 128, dqkv, None,
           ds, dout, qkv, lse, delta, T_, nh, scale, scale * flash_attention.LOG2E,
           shared_mem=flash_attention.wgmma_dkdv_smem(2))
    if dq_wgmma:
        dq_tiles = flash_attention.WGMMA_DQ_TILES
        launch("flash_attention_wgmma", "flash_attention_backward_dq_wgmma",
               (ceil_div(tiles, dq_tiles), B * nh), dq_tiles * 128, dqkv, None, ds, qkv, T_, nh,
               scale, shared_mem=flash_attention.WGMMA_DQ_SMEM)
    else:
        launch("flash_attention", "flash_attention_backward_dq", grid, 128, dqkv, None, ds, qkv,
               T_, nh, scale, shared_mem=flash_attention.DQ_SMEM)


# version: the module and the keywords of its attention_forward and attention_backward
# (row_block None: one gemm over the whole matrix)
VERSIONS = {1: (simple, dict(vectorized=False, row_block=None)),
            2: (simple, dict(vectorized=True, row_block=None)),
            3: (simple, dict(vectorized=True, row_block=simple.ROW_BLOCK)),
            4: (variant(v4_forward, v4_backward), {}),
            5: (variant(v7_forward, v5_backward), {}),
            6: (variant(v7_forward, functools.partial(v5_backward, source=V5_THREE)), {}),
            7: (variant(v7_forward, v7_backward), {}),
            8: (variant(v7_forward, functools.partial(v7_backward, source=V7_TWO)), {}),
            9: (variant(functools.partial(v7_forward, source=V7_FOUR), v7_backward), {}),
            10: (variant(functools.partial(flash_attention.attention_forward, wgmma=False),
                         functools.partial(flash_attention.attention_backward, wgmma=False)), {}),
            11: (variant(v11_forward, v11_backward), {}),
            12: (variant(v11_forward, functools.partial(v11_backward, dq_wgmma=True)), {}),
            13: (flash_attention, {})}
# registers per thread and spilled bytes of each flash version's kernels
KERNELS = {4: (V4, ("flash_attention_forward", "flash_attention_backward_dkdv",
                    "flash_attention_backward_dq")),
           5: (V5, ("flash_attention_backward",)),
           6: (V5_THREE, ("flash_attention_backward",)),
           7: (V7, ("flash_attention_forward", "flash_attention_backward_dkdv",
                    "flash_attention_backward_dq")),
           8: (V7_TWO, ("flash_attention_backward_dkdv",)),
           9: (V7_FOUR, ("flash_attention_forward",)),
           10: ("flash_attention", ("flash_attention_forward", "flash_attention_backward_dkdv",
                                    "flash_attention_backward_dq")),
           11: (WGMMA_DOUBLE, ("flash_attention_forward_wgmma",
                               "flash_attention_backward_dkdv_wgmma")),
           12: ("flash_attention_wgmma", ("flash_attention_backward_dq_wgmma",)),
           13: ("flash_attention_wgmma", ("flash_attention_forward_wgmma",
                                          "flash_attention_backward_dkdv_wgmma"))}
ROW_BLOCKS = (128, 256, 512)   # timed for version 3
HOPPER_ONLY = {11, 12, 13}


def check(rng, module, keywords):
    errors = {}
    for B, T_, nh, hs in CHECKS:
        C = nh * hs
        qkv, dout = randn(rng, B, T_, 3 * C), randn(rng, B, T_, C)
        shape, dtype = module.attention_saved(B, nh, T_)
        out, saved = poisoned(B, T_, C), poisoned(*shape, dtype=dtype)
        d_qkv = gpu(qkv)
        module.attention_forward(out, saved, d_qkv, nh, **keywords)
        ref_out, ref_att = np.empty((B, T_, C), np.float32), np.empty((B, nh, T_, T_), np.float32)
        cpu.attention_forward(ref_out, ref_att, qkv, nh)
        dqkv = poisoned(B, T_, 3 * C)
        module.attention_backward(dqkv, gpu(dout), d_qkv, out, saved, nh, **keywords)
        ref_dqkv = np.empty_like(qkv)
        cpu.attention_backward(ref_dqkv, dout, qkv, ref_out, ref_att, nh)
        tag = f"B={B} T={T_} NH={nh}"
        errors[f"{tag} out"] = ("out", rel_error(host(out), ref_out))
        if shape == ref_att.shape:             # the versions that keep the attention matrix
            errors[f"{tag} att"] = ("att", rel_error(host(saved), ref_att))
        dqkv = host(dqkv)
        for i, name in enumerate(("dq", "dk", "dv")):
            part = slice(i * C, (i + 1) * C)
            errors[f"{tag} {name}"] = (name, rel_error(dqkv[..., part], ref_dqkv[..., part]))
    return errors


def repeated(rng, B, *shape):
    """(B, *shape) bf16: one random sequence repeated B times (the speed is data-blind)."""
    out = cp.empty((B, *shape), dtype=np.uint16)
    out[...] = gpu(randn(rng, 1, *shape)).view(np.uint16)
    return out.view(bf16)


def torch_times(qkv, dout):
    """(forward, forward + backward) ms of nanoGPT's attention with flash SDPA, or None."""
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return None
    B, T_, C3 = qkv.shape
    C = C3 // 3
    x = torch.from_dlpack(qkv.view(np.int16)).view(torch.bfloat16)
    dy = torch.from_dlpack(dout.view(np.int16)).view(torch.bfloat16)

    def forward(x):
        q, k, v = (t.view(B, T_, NH, C // NH).transpose(1, 2) for t in x.split(C, dim=2))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).contiguous().view(B, T_, C)

    def forward_backward():
        xg = x.detach().requires_grad_()
        forward(xg).backward(dy)
    with torch.no_grad():
        fwd = median_ms(lambda: forward(x))
    return fwd, median_ms(forward_backward)


def timed_keywords(keywords):
    """The version's keywords, once per row_block timed where it cuts the gemms into blocks."""
    if keywords.get("row_block") is None:
        return [keywords]
    return [dict(keywords, row_block=rb) for rb in ROW_BLOCKS]


def backward_kernel_rows(rng, B=64):
    """Each backward kernel of versions 7 and 10-13 timed alone at B."""
    tiles = ceil_div(T, 64)
    qkv, dout = repeated(rng, B, T, 3 * NH * HS), repeated(rng, B, T, NH * HS)
    out, lse, dqkv = cp.empty_like(dout), cp.empty((B, NH, T), np.float32), cp.empty_like(qkv)
    flash_attention.attention_forward(out, lse, qkv, NH)
    delta = flash_attention.backward_delta(dout, out, B, T, NH)
    ds = cp.empty(B * NH * tiles * (tiles + 1) // 2 * 64 * 64, bf16)
    scale, grid = 1 / math.sqrt(HS), (tiles, B * NH)
    common = (lse, delta, T, NH, scale, scale * flash_attention.LOG2E)
    runs = {
        "7: delta": lambda: v7_delta(dout, out, B, T, NH),
        "10-13: delta": lambda: flash_attention.backward_delta(dout, out, B, T, NH),
        "7: dK/dV": lambda: launch(V7, "flash_attention_backward_dkdv", grid, 128, dqkv, dout,
                                   qkv, *common, shared_mem=V7_DKDV_SMEM),
        "7: dQ, recomputing S and dP": lambda: launch(
            V7, "flash_attention_backward_dq", grid, 128, dqkv, dout, qkv, *common,
            shared_mem=V7_DQ_SMEM),
        "10: dK/dV, storing dS": lambda: launch(
            "flash_attention", "flash_attention_backward_dkdv", grid, 128, dqkv, None, ds, dout,
            qkv, *common, shared_mem=flash_attention.DKDV_SMEM),
        "10, 11: dQ = dS K": lambda: launch(
            "flash_attention", "flash_attention_backward_dq", grid, 128, dqkv, None, ds, qkv, T,
            NH, scale, shared_mem=flash_attention.DQ_SMEM)}
    if flash_attention.hopper():
        runs["11, 12: dK/dV on wgmma, storing dS"] = lambda: launch(
            WGMMA_DOUBLE, "flash_attention_backward_dkdv_wgmma", grid, 128, dqkv, None, ds, dout,
            qkv, *common, shared_mem=flash_attention.wgmma_dkdv_smem(2))
        runs["13: the same, 3 stages"] = lambda: launch(
            "flash_attention_wgmma", "flash_attention_backward_dkdv_wgmma", grid, 128, dqkv, None,
            ds, dout, qkv, *common, shared_mem=flash_attention.wgmma_dkdv_smem())
        dq_tiles = flash_attention.WGMMA_DQ_TILES
        runs["12, 13: dQ = dS K on wgmma"] = lambda: launch(
            "flash_attention_wgmma", "flash_attention_backward_dq_wgmma",
            (ceil_div(tiles, dq_tiles), B * NH), dq_tiles * 128, dqkv, None, ds, qkv, T, NH, scale,
            shared_mem=flash_attention.WGMMA_DQ_SMEM)
    return [(B, name, f"{median_ms(run):.3f}") for name, run in runs.items()]


def main():
    rng = np.random.default_rng(0)
    versions = selected_versions(VERSIONS)
    if not flash_attention.hopper():
        print(f"versions {sorted(HOPPER_ONLY)} (wgmma, sm_90a only) skipped: this GPU is not a Hopper")
        versions = [v for v in versions if v not in HOPPER_ONLY]
    for version in versions:
        for name, (kind, err) in check(rng, *VERSIONS[version]).items():
            verdict = "ok" if err < TOL[kind] else "FAIL"
            print(f"version {version} {name}: relative error {err:.2e} {verdict}")
        source, names = KERNELS.get(version, (None, ()))
        for name in names:
            k = kernel(source, name)
            print(f"version {version} {name}: {k.num_regs} registers, {k.local_size_bytes} bytes local")
    rows = []
    for B in BATCHES:
        qkv, dout = repeated(rng, B, T, 3 * NH * HS), repeated(rng, B, T, NH * HS)
        out, dqkv = cp.empty_like(dout), cp.empty_like(qkv)
        for version in versions:
            module, keywords = VERSIONS[version]
            shape, dtype = module.attention_saved(B, NH, T)
            saved = cp.empty(shape, dtype=dtype)
            for kw in timed_keywords(keywords):
                forward = functools.partial(module.attention_forward, out, saved, qkv, NH, **kw)
                backward = functools.partial(module.attention_backward, dqkv, dout, qkv, out,
                                             saved, NH, **kw)
                fwd = median_ms(forward)
                both = median_ms(lambda: (forward(), backward()))
                rows.append((B, version, kw.get("row_block") or "-", f"{fwd:.3f}",
                             f"{both - fwd:.3f}", f"{both:.3f}"))
            del saved
        reference = torch_times(qkv, dout)
        if reference:
            fwd, both = reference
            rows.append((B, "torch flash", "", f"{fwd:.3f}", f"{both - fwd:.3f}", f"{both:.3f}"))
    print(f"\nT = {T}, NH = {NH}, hs = {HS}")
    print_table(rows, ["B", "version", "row block", "forward ms", "backward ms",
                       "forward+backward ms"])
    if {7, 10, 11, 12, 13} & set(versions):
        print("\nthe backward's kernels alone")
        print_table(backward_kernel_rows(rng), ["B", "kernel", "ms"])


if __name__ == "__main__":
    main()
