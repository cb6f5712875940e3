"""Causal self-attention forward and backward.

    python dev/cuda/attention.py [version...]     # check against llmpy/cpu.py, then time

Versions 1-3 materialize the (T, T) attention matrix (dev/cuda/attention_simple.py with its
keywords set, kernels in dev/cuda/attention.cu); version 4 is llmpy's (kernels/flash_attention.cu):
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
  4  flash attention (FlashAttention-2's algorithm) on bf16 tensor cores, mma.sync m16n8k16:
     64-row tiles of queries stream the keys through shared memory with an online softmax, the
     probabilities never leave registers and skip the tiles above the diagonal; only the
     log-sum-exp per row is saved. The backward recomputes the probabilities: one kernel per
     key tile for dK and dV, one per query tile for dQ (no atomics). No (T, T) traffic at all.
Timed at GPT-2 124M's NH = 12, hs = 64, T = 1024 for B = 8..64, forward and forward + backward
(backward: their difference), against PyTorch's flash attention (F.scaled_dot_product_attention)
on the same qkv, with nanoGPT's head split and merge around it, where torch is installed.
"""
import functools

import cupy as cp
import numpy as np
from common import (bf16, gpu, host, poisoned, print_table, randn, rel_error, selected_versions,
                    time_ms)

import attention_simple as simple
from llmpy import cpu
from llmpy.cuda import flash_attention

NH, HS, T = 12, 64, 1024
BATCHES = (8, 16, 32, 64)
# (B, T, NH, hs): GPT-2's heads, a T that is not a multiple of 8 (the sampler's), GPT-2's T
CHECKS = [(4, 256, NH, HS), (2, 37, 4, 64), (1, 1024, 2, 64)]
# preatt, att, the outputs (and datt, dpreatt backward) are each rounded to bf16 (<= 2^-8 of a
# value); a NumPy emulation of that chain gives ~5e-3 forward and ~6e-3 backward of the scale
TOL = {"out": 1e-2, "att": 1e-2, "dq": 2e-2, "dk": 2e-2, "dv": 2e-2}
# version: the module and the keywords of its attention_forward and attention_backward
# (row_block None: one gemm over the whole matrix)
VERSIONS = {1: (simple, dict(vectorized=False, row_block=None)),
            2: (simple, dict(vectorized=True, row_block=None)),
            3: (simple, dict(vectorized=True, row_block=simple.ROW_BLOCK)),
            4: (flash_attention, {})}
ROW_BLOCKS = (128, 256, 512)   # timed for version 3


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
        fwd = time_ms(lambda: forward(x))
    return fwd, time_ms(forward_backward)


def timed_keywords(keywords):
    """The version's keywords, once per row_block timed where it cuts the gemms into blocks."""
    if keywords.get("row_block") is None:
        return [keywords]
    return [dict(keywords, row_block=rb) for rb in ROW_BLOCKS]


def main():
    rng = np.random.default_rng(0)
    versions = selected_versions(VERSIONS)
    for version in versions:
        for name, (kind, err) in check(rng, *VERSIONS[version]).items():
            verdict = "ok" if err < TOL[kind] else "FAIL"
            print(f"version {version} {name}: relative error {err:.2e} {verdict}")
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
                fwd = time_ms(forward)
                both = time_ms(lambda: (forward(), backward()))
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


if __name__ == "__main__":
    main()
