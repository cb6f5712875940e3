"""GPT-2 for sampling, with a key/value cache: each new token costs one position's forward, not
the whole context's.

Causal attention lets position i read the keys and values of positions 0..i only, so those of a
context's first n tokens do not depend on what follows them. The cache keeps them per layer,
    k[l, i], v[l, i]   (C each: NH heads of hs side by side, as in qkv's second and third thirds)
for positions 0..n-1 of the last context it was given. A forward over the new tokens at positions
p..p+t-1 computes their q, k, v, writes k, v at p..p+t-1 and attends the t queries to the keys
0..p+t-1. The rest of each block is the training model's own gpt2.block_forward on the t new
rows; the LM head runs on the last row only.

The cache holds k and v as the backend's qkv holds them (fp32 on the CPU, bf16 on the GPU); the
attention of the new rows is plain array code (ops.xp: NumPy or CuPy) in fp32.
"""
import math

import numpy as np

from llmpy.config import param_shapes
from llmpy.cpu import attention_mask
from llmpy.gpt2 import block_forward, carve, input_layernorm_weights, split_flat


class KVCacheGPT2:
    """next_logits(context) for contexts of up to max_seq_len tokens (GPT2.next_logits's
    contract), recomputing only the positions after the longest prefix that the context shares
    with the previous one."""

    def __init__(self, cfg, ops, params):
        """params: the flat fp32 host array in llm.c's layout, as GPT2 takes it."""
        self.cfg, self.ops, self.T = cfg, ops, cfg.max_seq_len
        self.params = split_flat(ops.to_device(params.astype(ops.param_dtype)), param_shapes(cfg))
        L, T, C, Vp = cfg.num_layers, cfg.max_seq_len, cfg.channels, cfg.padded_vocab_size
        a, f = ops.act_dtype, np.float32
        # a forward over t new positions uses the first t rows of each (T, ...) buffer
        _, self.acts = carve(ops.xp, {
            "k": ((L, T, C), a), "v": ((L, T, C), a),
            "x": ((T, C), a),                   # residual stream: a layer's input, then its output
            "residual2": ((T, C), a),           # x + attention branch
            "ln": ((T, C), a), "ln_mean": ((T,), f), "ln_rstd": ((T,), f),
            "qkv": ((T, 3 * C), a), "atty": ((T, C), a),
            "btc": ((T, C), a),                 # a projection's output before its residual add
            "fch": ((T, 4 * C), a), "fch_gelu": ((T, 4 * C), a),
            "logits": ((1, Vp), a),
        })
        self.inputs = ops.xp.zeros((1, T), dtype=np.int32)
        self.cached = []        # the tokens at positions 0.. whose keys and values the cache holds

    def next_logits(self, context):
        """The logits (V) of the token after `context` (a list of 1 to max_seq_len token ids),
        on the device. The last position is always recomputed: its logits are not cached."""
        if not 0 < len(context) <= self.T:
            raise ValueError(f"a context of {len(context)} tokens; the model takes 1 to {self.T}")
        start = min(common_prefix(self.cached, context), len(context) - 1)
        self._forward(context[start:], start)
        self.cached = list(context)
        return self.acts["logits"][0, :self.cfg.vocab_size]

    def _forward(self, tokens, start):
        """The forward of `tokens` at positions start.., over the cache's positions 0..start-1;
        leaves the last position's logits in acts["logits"]."""
        ops, cfg, p = self.ops, self.cfg, self.params
        L, C = cfg.num_layers, cfg.channels
        t, end = len(tokens), start + len(tokens)
        x, residual2, ln, mean, rstd, qkv, atty, btc, fch, fch_gelu = (self.acts[name][:t] for name in (
            "x", "residual2", "ln", "ln_mean", "ln_rstd", "qkv", "atty", "btc", "fch", "fch_gelu"))
        # one ln buffer (with mean, rstd) serves ln1, ln2 and the next ln1; x is the block's input
        # and, once that is read, its output
        acts = {"qkv": qkv, "atty": atty, "btc": btc, "residual2": residual2, "ln2": ln,
                "ln2_mean": mean, "ln2_rstd": rstd, "fch": fch, "fch_gelu": fch_gelu, "residual3": x}
        inputs = self.inputs[:, :t]
        ops.upload(inputs, np.array([tokens], dtype=np.int32))
        ops.encoder_forward(x[None], inputs, p["wte"], p["wpe"][start:])    # positions start..end-1
        ops.layernorm_forward(ln, mean, rstd, x, *input_layernorm_weights(p, 0, L))
        for l in range(L):
            k, v = self.acts["k"][l], self.acts["v"][l]

            def cached_attention(atty, qkv):   # the new rows' k, v into the cache, then attend
                k[start:end] = qkv[:, C:2 * C]
                v[start:end] = qkv[:, 2 * C:]
                attention(atty, qkv[:, :C], k[:end], v[:end], start, cfg.num_heads, ops.xp)
            block_forward(ops, p, l, x, ln, cached_attention, acts,
                          (ln, mean, rstd, *input_layernorm_weights(p, l + 1, L)))
        ops.matmul_forward(self.acts["logits"], ln[t - 1:], p["wte"], None)     # tied LM head


def attention(out, q, k, v, start, NH, xp):
    """Causal self-attention of t new rows at positions start..start+t-1 over the positions
    0..end-1 (end = start + t) that k and v hold, through cpu.attention_mask (causal: new row i
    sees keys 0..start+i).
    q, out (t, C); k, v (end, C); per head h (hs = C / NH columns), in fp32:
        scores (t, end) = q_h k_h^T / sqrt(hs), the hidden keys at -inf; softmax over the keys;
        out_h (t, hs) = scores v_h."""
    t, C = q.shape
    end, hs = k.shape[0], C // NH
    q = q.reshape(t, NH, hs).astype(np.float32, copy=False).transpose(1, 0, 2)      # (NH, t, hs)
    k = k.reshape(end, NH, hs).astype(np.float32, copy=False).transpose(1, 2, 0)    # (NH, hs, end)
    v = v.reshape(end, NH, hs).astype(np.float32, copy=False).transpose(1, 0, 2)    # (NH, end, hs)
    hidden = attention_mask(start + xp.arange(t), xp.arange(end))                    # (t, end)
    scores = q @ k * np.float32(1.0 / math.sqrt(hs))
    scores += xp.where(hidden, np.float32(-np.inf), np.float32(0.0))
    scores -= scores.max(axis=-1, keepdims=True)
    xp.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out[...] = (scores @ v).transpose(1, 0, 2).reshape(t, C)


def common_prefix(a, b):
    """How many leading elements the sequences a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
