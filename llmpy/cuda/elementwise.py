"""Launchers for the elementwise kernels: kernels/gelu.cu and kernels/residual.cu. Every size
is a multiple of 8 (C is), so each thread moves exactly one 128-bit packet."""
from llmpy.cuda.runtime import ceil_div, launch

BLOCK = 512


def _grid(n):
    assert n % 8 == 0, "elementwise kernels move 8 bf16 per thread"
    return ceil_div(n // 8, BLOCK)


def gelu_forward(out, inp):
    launch("gelu", "gelu_forward", _grid(inp.size), BLOCK, out, inp, inp.size)


def gelu_backward(dinp, inp, dout):
    launch("gelu", "gelu_backward", _grid(inp.size), BLOCK, dinp, inp, dout, inp.size)


def residual_forward(out, a, b):
    launch("residual", "residual_forward", _grid(a.size), BLOCK, out, a, b, a.size)
