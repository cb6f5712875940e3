"""The fused ops that the model calls, each written once as the composition of primitives
(llmpy/cpu.py's forward/backward pairs), with `ops` the backend module whose primitives it runs.

The CPU runs these compositions. A backend with a kernel or an epilogue that does the work of a
composition in one pass defines its own op under the same name, with the same arguments and
results (llmpy.cuda does for each of these); install() gives a backend the composition for every
fused op it does not define. So a change to a primitive (GELU, say) reaches the fused ops built on
it, and a backend without a fused version of something runs the primitives one after the other.
"""
import functools

FUSED = ("matmul_gelu_forward", "gelu_matmul_backward", "residual_layernorm_forward",
         "layernorm_backward_sums", "attention_backward_sums", "classifier_forward_backward")


def install(backend):
    """Give the backend module each fused op that it does not define: the composition below,
    running the backend's own primitives."""
    for name in FUSED:
        if not hasattr(backend, name):
            setattr(backend, name, functools.partial(globals()[name], backend))


# ----------------------------------------------------------------------------------------------
# the MLP's GELU, next to the matmul on either side of it: fc's forward (the GELU after it) and
# fcproj's backward (the GELU before it)

def matmul_gelu_forward(ops, out, pre_gelu, inp, weight, bias):
    """pre_gelu = inp @ weight^T + bias, kept for the backward; out = gelu(pre_gelu)."""
    ops.matmul_forward(pre_gelu, inp, weight, bias)
    ops.gelu_forward(out, pre_gelu)


def gelu_matmul_backward(ops, dinp, dweight, dbias, dout, inp, weight, pre_gelu):
    """The backward of gelu(pre_gelu) @ weight^T + bias, with inp = gelu(pre_gelu): dinp is the
    gradient of pre_gelu (overwritten); dweight and dbias accumulate as in matmul_backward."""
    ops.matmul_backward(dinp, dweight, dbias, dout, inp, weight)
    ops.gelu_backward(dinp, pre_gelu, dinp)


# ----------------------------------------------------------------------------------------------
# the residual stream: each branch's output added to it, then the next layernorm; on the way
# back, the projection that ended the branch gets its bias gradient from the residual gradient

def residual_layernorm_forward(ops, residual, out, mean, rstd, a, b, weight, bias):
    """residual = a + b, then out = layernorm(residual), mean and rstd saved."""
    ops.residual_forward(residual, a, b)
    ops.layernorm_forward(out, mean, rstd, residual, weight, bias)


def layernorm_backward_sums(ops, dinp, dweight, dbias, dout, inp, weight, mean, rstd, dinp_sums):
    """layernorm_backward (dinp accumulates), then dinp_sums += the column sums of dinp as it now
    stands. In the model dinp is the residual gradient, which is also the output gradient of the
    projection whose output was added to the residual: dinp_sums is that projection's bias
    gradient."""
    ops.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd)
    ops.bias_backward(dinp_sums, dinp)


# ----------------------------------------------------------------------------------------------
# attention, and the qkv matmul's bias gradient

def attention_backward_sums(ops, dqkv, dout, qkv, out, att, NH, dqkv_sums):
    """attention_backward (dqkv overwritten), then dqkv_sums += the column sums of dqkv: the
    qkv matmul's bias gradient, whose backward then takes no bias."""
    ops.attention_backward(dqkv, dout, qkv, out, att, NH)
    ops.bias_backward(dqkv_sums, dqkv)


# ----------------------------------------------------------------------------------------------
# the classifier

def classifier_forward_backward(ops, logits, losses, targets, V, dloss):
    """losses from the logits, then dlogits written over them: the forward and backward of the
    softmax cross-entropy with no (B,T,Vp) probabilities tensor besides the logits."""
    ops.softmax_crossentropy_forward(losses, logits, targets, V)
    ops.softmax_crossentropy_backward(logits, logits, targets, V, dloss)
