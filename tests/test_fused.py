"""The fused ops of llmpy/fused.py: on the CPU each gives the bits of its primitives run one after
the other as the model ran them unfused (tests/test_ops.py checks the primitives, and the fused
ops themselves, against PyTorch autograd), and install() gives a backend the composition of each
fused op it does not define, over the backend's own primitives."""
import types

import numpy as np

from llmpy import cpu, fused

B, T, C, NH, V, Vp = 2, 5, 16, 2, 37, 48


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_same_bits(ours, ref):
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b, equal_nan=True)


def copies(*arrays):
    return [a.copy() for a in arrays]


def test_matmul_gelu_forward_is_matmul_then_gelu(rng):
    inp, w, b = randn(rng, B, T, C), randn(rng, 4 * C, C), randn(rng, 4 * C)
    out, pre = np.empty((B, T, 4 * C), np.float32), np.empty((B, T, 4 * C), np.float32)
    cpu.matmul_gelu_forward(out, pre, inp, w, b)
    ref_out, ref_pre = np.empty_like(out), np.empty_like(pre)
    cpu.matmul_forward(ref_pre, inp, w, b)
    cpu.gelu_forward(ref_out, ref_pre)
    assert_same_bits((out, pre), (ref_out, ref_pre))


def test_gelu_matmul_backward_is_matmul_backward_then_gelu_backward(rng):
    pre, w, dout = randn(rng, B, T, 4 * C), randn(rng, C, 4 * C), randn(rng, B, T, C)
    inp = np.empty_like(pre)
    cpu.gelu_forward(inp, pre)
    dw, db = randn(rng, C, 4 * C), randn(rng, C)
    dinp, ref_dinp = np.empty_like(pre), np.empty_like(pre)
    ref_dw, ref_db = copies(dw, db)
    cpu.gelu_matmul_backward(dinp, dw, db, dout, inp, w, pre)
    cpu.matmul_backward(ref_dinp, ref_dw, ref_db, dout, inp, w)
    cpu.gelu_backward(ref_dinp, pre, ref_dinp)
    assert_same_bits((dinp, dw, db), (ref_dinp, ref_dw, ref_db))


def test_residual_layernorm_forward_is_residual_then_layernorm(rng):
    a, b, w, bias = randn(rng, B, T, C), randn(rng, B, T, C), randn(rng, C), randn(rng, C)
    outs = [np.empty((B, T, C), np.float32), np.empty((B, T, C), np.float32),
            np.empty((B, T), np.float32), np.empty((B, T), np.float32)]
    ref = [np.empty_like(x) for x in outs]
    cpu.residual_layernorm_forward(*outs, a, b, w, bias)
    cpu.residual_forward(ref[0], a, b)
    cpu.layernorm_forward(*ref[1:], ref[0], w, bias)
    assert_same_bits(outs, ref)


def test_layernorm_backward_sums_is_layernorm_backward_then_the_bias_gradient_of_dinp(rng):
    x, w, b = randn(rng, B, T, C), randn(rng, C), randn(rng, C)
    ln, mean, rstd = np.empty_like(x), np.empty((B, T), np.float32), np.empty((B, T), np.float32)
    cpu.layernorm_forward(ln, mean, rstd, x, w, b)
    grads = [randn(rng, B, T, C), randn(rng, C), randn(rng, C), randn(rng, C)]
    ref = copies(*grads)
    dout = randn(rng, B, T, C)
    cpu.layernorm_backward_sums(*grads[:3], dout, x, w, mean, rstd, grads[3])
    cpu.layernorm_backward(*ref[:3], dout, x, w, mean, rstd)
    cpu.bias_backward(ref[3], ref[0])
    assert_same_bits(grads, ref)


def test_attention_backward_sums_is_attention_backward_then_the_bias_gradient_of_dqkv(rng):
    qkv, dout = randn(rng, B, T, 3 * C), randn(rng, B, T, C)
    out, att = np.empty((B, T, C), np.float32), np.empty(cpu.attention_saved(B, NH, T)[0], np.float32)
    cpu.attention_forward(out, att, qkv, NH)
    dqkv, ref_dqkv = np.empty_like(qkv), np.empty_like(qkv)
    dbias = randn(rng, 3 * C)
    ref_dbias = dbias.copy()
    cpu.attention_backward_sums(dqkv, dout, qkv, out, att, NH, dbias)
    cpu.attention_backward(ref_dqkv, dout, qkv, out, att, NH)
    cpu.bias_backward(ref_dbias, ref_dqkv)
    assert_same_bits((dqkv, dbias), (ref_dqkv, ref_dbias))


def test_classifier_is_the_cross_entropy_forward_then_its_backward_over_the_logits(rng):
    logits = randn(rng, B, T, Vp) * 4
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    losses, ref_losses, ref_dlogits = (np.empty((B, T), np.float32), np.empty((B, T), np.float32),
                                       np.empty_like(logits))
    cpu.softmax_crossentropy_forward(ref_losses, logits, targets, V)
    cpu.softmax_crossentropy_backward(ref_dlogits, logits, targets, V, 0.1)
    cpu.classifier_forward_backward(logits, losses, targets, V, 0.1)
    assert_same_bits((losses, logits), (ref_losses, ref_dlogits))


def recording_backend(**own):
    """A backend module whose primitives record their calls; `own` its fused ops."""
    backend = types.ModuleType("recording")
    backend.calls = []
    for name in ("matmul_forward", "gelu_forward", "residual_forward", "layernorm_forward"):
        setattr(backend, name, lambda *args, name=name: backend.calls.append((name, args)))
    for name, fn in own.items():
        setattr(backend, name, fn)
    return backend


def test_install_gives_a_backend_the_composition_over_its_own_primitives():
    backend = recording_backend()
    fused.install(backend)
    backend.matmul_gelu_forward("out", "pre", "inp", "w", "b")
    assert backend.calls == [("matmul_forward", ("pre", "inp", "w", "b")),
                             ("gelu_forward", ("out", "pre"))]


def test_install_keeps_a_fused_op_that_the_backend_defines():
    def own_kernel(*args):
        backend.calls.append(("own_kernel", args))
    backend = recording_backend(residual_layernorm_forward=own_kernel)
    fused.install(backend)
    assert backend.residual_layernorm_forward is own_kernel
    assert all(hasattr(backend, name) for name in fused.FUSED)
