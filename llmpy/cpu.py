"""Every GPT-2 op in NumPy, fp32: the readable reference (llm.c's train_gpt2.c). Each op is a
plain primitive, its forward next to its backward; the fused ops that the model calls are their
compositions, written once in llmpy/fused.py.

Conventions shared with the CUDA backend (llmpy/cuda):
- every op writes into preallocated outputs; `d*` gradient outputs of *parameters* accumulate
  (+=), so gradient accumulation over micro-steps needs no extra pass; gradient outputs of
  *activations* are overwritten, except where the docstring says they accumulate;
- shapes: B batch, T time, C channels, NH heads, hs = C/NH head size, OC output channels,
  V real vocab, Vp padded vocab. Matrices are stored (out, in) row-major as in llm.c.
"""
import math
import sys

import numpy as np

from llmpy import fused
from llmpy.fp8_linear import Fp8Linears
from llmpy.optim import clip_factor  # noqa: F401 -- the optimizer's formula, this backend's op

xp = np
param_dtype = np.float32    # model weights and their gradients
act_dtype = np.float32      # activations
name = "cpu"


def to_device(a):
    return np.asarray(a)


def to_host(a):
    return np.asarray(a)


def upload(dst, src):
    dst[...] = src


def synchronize():
    pass


def device_name():
    return "cpu"


def memory_in_use():
    """Bytes the backend holds on its device; None where that is not tracked (host memory)."""
    return None


def fp8_linears(cfg, params, B, T):
    """--fp8 1 emulated: the blocks' matmuls on FP8 values (llmpy/cpu_fp8.py)."""
    from llmpy import cpu_fp8       # here: it runs this module's GELU
    return Fp8Linears(sys.modules[__name__], cpu_fp8, cfg, params, B, T)


capture = None              # no graphs to capture a sequence of ops into: they run as called
device_errors = ()          # no device faults to report
master_weights = False      # the params are fp32 already
collectives = "mpi"         # gradients reduced by MPI on the host
reports_mfu = False         # no peak to measure against


# ----------------------------------------------------------------------------------------------
# encoder: out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]

def encoder_forward(out, inp, wte, wpe):
    T = inp.shape[1]
    np.take(wte, inp, axis=0, out=out)
    out += wpe[:T]


def encoder_backward(dwte, dwpe, dout, inp):
    """dwte[inp[b,t]] += dout[b,t]; dwpe[t] += sum_b dout[b,t]"""
    T = inp.shape[1]
    np.add.at(dwte, inp.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    dwpe[:T] += dout.sum(axis=0)


# ----------------------------------------------------------------------------------------------
# layernorm over the last axis: out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + 1e-5).
# mean and rstd (B,T) are saved for the backward.

LN_EPS = 1e-5


def layernorm_forward(out, mean, rstd, inp, weight, bias):
    np.mean(inp, axis=-1, out=mean)
    xc = inp - mean[..., None]
    var = np.mean(xc * xc, axis=-1)
    np.divide(1.0, np.sqrt(var + LN_EPS), out=rstd)
    np.multiply(xc, rstd[..., None], out=out)
    out *= weight
    out += bias


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    """dinp accumulates (+=): the residual stream's gradient flows through it.
    With n = (x - mean) * rstd and g = dout * w:
    dx = rstd * (g - mean(g) - n * mean(g * n))."""
    norm = (inp - mean[..., None]) * rstd[..., None]
    bias_backward(dbias, dout)
    dweight += (dout * norm).sum(axis=tuple(range(dout.ndim - 1)))
    g = dout * weight
    dx = g - g.mean(axis=-1, keepdims=True) - norm * (g * norm).mean(axis=-1, keepdims=True)
    dx *= rstd[..., None]
    dinp += dx


# ----------------------------------------------------------------------------------------------
# matmul: out (B,T,OC) = inp (B,T,C) @ weight(OC,C)^T + bias (OC)

def matmul_forward(out, inp, weight, bias):
    """bias may be None (the tied LM head has none)."""
    OC, C = weight.shape
    out2d = out.reshape(-1, OC)
    np.matmul(inp.reshape(-1, C), weight.T, out=out2d)
    if bias is not None:
        out2d += bias


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """dinp = dout @ W (overwritten); dW += dout^T @ inp; dbias += bias_backward's sums of dout
    (dbias None: no bias, or its gradient taken elsewhere)."""
    OC, C = weight.shape
    dout2d = dout.reshape(-1, OC)
    np.matmul(dout2d, weight, out=dinp.reshape(-1, C))
    dweight += dout2d.T @ inp.reshape(-1, C)
    if dbias is not None:
        bias_backward(dbias, dout)


def bias_backward(dbias, dout):
    """A bias's gradient: dbias (OC) += the column sums of dout (..., OC), summed over every
    row, since the bias is added to every row."""
    dbias += dout.sum(axis=tuple(range(dout.ndim - 1)))


# ----------------------------------------------------------------------------------------------
# causal self-attention. qkv (B,T,3C) holds q, k, v side by side, each split into NH heads of hs.
# att (B,NH,T,T) = softmax(q k^T / sqrt(hs) with the hidden keys masked), saved for the backward;
# out (B,T,C) = att @ v with heads concatenated.

def attention_mask(queries, keys):
    """hidden (len(queries), len(keys)) bool: whether the query at position queries[i] does not
    see the key at position keys[j]. Causal: a query sees the keys at and before its position.
    The one place the mask is written for the CPU and the key/value cache; the GPU kernels' is
    kernels/flash_attention.cuh's sees() and tile ranges."""
    return keys[None, :] > queries[:, None]


def attention_saved(B, NH, T):
    """Shape and dtype of what the forward keeps per layer for the backward."""
    return (B, NH, T, T), np.float32


def _split_heads(qkv, NH):
    B, T, C3 = qkv.shape
    hs = C3 // 3 // NH
    q, k, v = qkv.reshape(B, T, 3, NH, hs).transpose(2, 0, 3, 1, 4)   # each (B,NH,T,hs)
    return q, k, v, hs


def attention_forward(out, att, qkv, NH):
    q, k, v, hs = _split_heads(qkv, NH)
    B, _, T, _ = q.shape
    np.matmul(q, k.transpose(0, 1, 3, 2), out=att)
    att *= 1.0 / np.sqrt(hs)
    att[:, :, attention_mask(np.arange(T), np.arange(T))] = -np.inf
    att -= att.max(axis=-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    out[...] = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, NH * hs)


def attention_backward(dqkv, dout, qkv, out, att, NH):
    """dqkv overwritten. With y = att @ v (out, per head) and datt = dy @ v^T, the softmax
    backward is dpre = att * (datt - delta), delta_i = sum_j datt_ij att_ij = dy_i . y_i:
    the row sums taken over the head's hs channels of the forward's output instead of over
    the T keys (the same products, summed in another order)."""
    q, k, v, hs = _split_heads(qkv, NH)
    B, _, T, _ = q.shape
    dq, dk, dv = dqkv.reshape(B, T, 3, NH, hs).transpose(2, 0, 3, 1, 4)
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)              # (B,NH,T,hs)
    y = out.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dv[...] = att.transpose(0, 1, 3, 2) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)
    delta = (dy * y).sum(axis=-1, keepdims=True)
    dpre = att * (datt - delta)                                        # masked entries: att = 0
    dpre *= 1.0 / np.sqrt(hs)
    dq[...] = dpre @ k
    dk[...] = dpre.transpose(0, 1, 3, 2) @ q


# ----------------------------------------------------------------------------------------------
# GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

GELU_SCALE = np.sqrt(2.0 / np.pi).astype(np.float32)


def gelu_forward(out, inp):
    np.multiply(0.5 * inp, 1.0 + np.tanh(GELU_SCALE * (inp + 0.044715 * inp * inp * inp)), out=out)


def gelu_backward(dinp, inp, dout):
    """dinp overwritten (may alias dout)."""
    th = np.tanh(GELU_SCALE * (inp + 0.044715 * inp * inp * inp))
    du = GELU_SCALE * (1.0 + 3.0 * 0.044715 * inp * inp)
    np.multiply(dout, 0.5 * (1.0 + th) + 0.5 * inp * (1.0 - th * th) * du, out=dinp)


# ----------------------------------------------------------------------------------------------
# residual: out = a + b. Its backward is the identity: the gradient of out is that of a and of b,
# so the model passes one residual-stream gradient on, and no op runs.

def residual_forward(out, a, b):
    np.add(a, b, out=out)


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy over the V real columns of logits (B,T,Vp), p = softmax(logits[..., :V]):
#   losses[b,t] = -log p[b,t,target]                                         (fp32)
#   dlogits[b,t,:] = dloss * (p - onehot(target)), padded columns V..Vp = 0
# Both subtract the row's max before exp (logits beyond exp's range stay finite).

def softmax_crossentropy_forward(losses, logits, targets, V):
    lv = logits[..., :V]
    shifted = lv - lv.max(axis=-1, keepdims=True)
    target_logit = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    np.exp(shifted, out=shifted)
    np.subtract(np.log(shifted.sum(axis=-1)), target_logit, out=losses)


def softmax_crossentropy_backward(dlogits, logits, targets, V, dloss):
    """dlogits overwritten (may alias logits: the model writes it into the logits buffer)."""
    dv = dlogits[..., :V]
    np.subtract(logits[..., :V], logits[..., :V].max(axis=-1, keepdims=True), out=dv)
    np.exp(dv, out=dv)
    dv *= dloss / dv.sum(axis=-1, keepdims=True)
    np.put_along_axis(dv, targets[..., None],
                      np.take_along_axis(dv, targets[..., None], axis=-1) - dloss, axis=-1)
    dlogits[..., V:] = 0.0


# ----------------------------------------------------------------------------------------------
# the fused ops that the model calls (matmul_gelu_forward, ...): llmpy/fused.py's compositions of
# the primitives above

fused.install(sys.modules[__name__])


# ----------------------------------------------------------------------------------------------
# optimizer

def global_norm_squared(grads, chunk=1 << 20):
    """Sum of squares over the flat gradient buffer, accumulated in fp64 (an fp32 sum of 10^8
    squares would drift), a chunk at a time so the fp64 copy stays small and cache-warm."""
    buf = np.empty(min(chunk, grads.size), dtype=np.float64)
    total = 0.0
    for start in range(0, grads.size, chunk):
        part = buf[:min(chunk, grads.size - start)]
        part[...] = grads[start:start + chunk]
        total += float(np.dot(part, part))
    return total


def clip_scale(grads, grad_clip):
    """The squared global norm and the clip factor from it; the GPU backend keeps both on the
    device."""
    norm_squared = global_norm_squared(grads)
    return norm_squared, clip_factor(math.sqrt(norm_squared), grad_clip)


def adamw_update(param, grad, m, v, master, lr, beta1, beta2, eps, weight_decay, step,
                 grad_scale, seed):
    """AdamW (decoupled weight decay, as PyTorch's), bias-corrected, on one tensor.
    grad_scale folds in gradient clipping. master and seed are for bf16 params with fp32
    master weights and stochastic rounding (GPU); fp32 params here are their own master."""
    # one working buffer `u`, reused in place: a 124M model's tensors are 500 MB each
    u = grad * grad_scale                            # g
    m *= beta1
    m += (1.0 - beta1) * u                           # m = b1 m + (1 - b1) g
    u *= u
    v *= beta2
    v += (1.0 - beta2) * u                           # v = b2 v + (1 - b2) g^2
    np.sqrt(v / (1.0 - beta2 ** step), out=u)
    u += eps
    np.divide(m, u, out=u)
    u *= 1.0 / (1.0 - beta1 ** step)                 # mhat / (sqrt(vhat) + eps)
    if weight_decay:
        u += weight_decay * param
    u *= lr
    param -= u
