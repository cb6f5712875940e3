"""The CPU's FP8 kernels for llmpy/fp8_linear.py, in NumPy: what llmpy/cuda/fp8.py does on the GPU,
with the same arguments, computed from llmpy/fp8.py's numbers. An FP8 value is stored as the fp32
value of its code (BYTE), so a product is an fp32 matmul of exactly the values the tensor cores
multiply; each product then takes both inverse scales and the epilogue as cuBLASLt does (the sum
in fp32 here, in the tensor cores' order there: the two differ by fp32 rounding only)."""
import numpy as np

from llmpy import cpu, fp8

BYTE = np.float32


def address(a):
    return a.ctypes.data


def cast(out, amax, inp, scale, fmt):
    """out = fmt(inp * scale), same shape; amax[0] = max(amax[0], max |inp|)."""
    out[...] = fp8.quantize(fmt, inp, scale[0]).reshape(out.shape)
    amax[0] = max(amax[0], np.abs(inp).max())


def cast_transpose(out, out_t, amax, inp, scale, fmt, dbias=None):
    """As cast, and out_t = the transpose of out (inp 2-D); with dbias, dbias += inp's column sums."""
    cast(out, amax, inp, scale, fmt)
    out_t[...] = out.T
    if dbias is not None:
        cpu.bias_backward(dbias, inp)


def update_scales(scale, scale_inv, history, amax, fmt, margin=0):
    """This pass's amax pushed into each history, the scales from the histories, amax reset;
    scale_inv as the GPU's: each tensor's inverse the first value of its row."""
    history[...] = fp8.push_amax(history, amax)
    scale[...] = fp8.next_scales(history, fmt, scale, margin)
    scale_inv.reshape(scale.size, -1)[:, 0] = np.float32(1) / scale
    amax[...] = 0


def _scaled(a, a_inv, b_t, b_inv):
    return (a @ b_t.T) * (a_inv[0] * b_inv[0])


def forward(out, inp, inp_inv, weight, weight_inv, fast_accum=True, bias=None, pre_gelu=None):
    """out (N, OC) = inp (N, C) . weight (OC, C) over C, + bias; with pre_gelu, pre_gelu = that
    and out = gelu(pre_gelu). fast_accum: the GPU's choice of accumulation, the same sum here."""
    acc = _scaled(inp, inp_inv, weight, weight_inv)
    if bias is not None:
        acc += bias
    if pre_gelu is None:
        out[...] = acc
    else:
        pre_gelu[...] = acc
        cpu.gelu_forward(out, pre_gelu)


def backward_inp(dinp, dout, dout_inv, weight_t, weight_inv, pre_gelu=None):
    """dinp (N, C) = dout (N, OC) . weight_t (C, OC) over OC; with pre_gelu, times gelu'(pre_gelu)."""
    acc = _scaled(dout, dout_inv, weight_t, weight_inv)
    if pre_gelu is None:
        dinp[...] = acc
    else:
        cpu.gelu_backward(dinp, pre_gelu, acc)


def backward_weight(dweight, dout_t, dout_inv, inp_t, inp_inv):
    """dweight (OC, C) += dout_t (OC, N) . inp_t (C, N) over N."""
    dweight += _scaled(dout_t, dout_inv, inp_t, inp_inv)
