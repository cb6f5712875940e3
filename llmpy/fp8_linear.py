"""--fp8 1: the four linear layers of every block (qkv, attproj, fc, fcproj) in FP8, forward and
backward, everything else as before: on a GPU, llmpy/cuda/fp8.py's casts and cuBLASLt products;
on the CPU, llmpy/cpu_fp8.py's NumPy emulation of the same numbers (llmpy/fp8.py's rounding).

Fp8Linears is an ops for llmpy/gpt2.py: its matmul ops (matmul_forward, matmul_gelu_forward,
matmul_backward, gelu_matmul_backward) run in FP8 when the weight is one of the blocks' four,
and every other op, the LM head's matmul among them, is the backend's own. Per tensor:
    input of each linear (ln1, atty, ln2, fch_gelu)  E4M3, cast with its transpose (C, N) in the
                                                      forward; the transpose is kept per layer
                                                      for the backward's dweight product
    weight                                            E4M3 with its transpose, cast at the start
                                                      of every forward from the bf16 params
    output gradient (dout)                            E5M2 with its transpose, in the backward
Scales are llmpy/fp8.py's delayed ones: each cast records its tensor's largest |x|, and the
start of every forward pass pushes those into each tensor's history of HISTORY passes and sets
scale = max_of_format / max(history). Before the first pass the model runs one calibrating pass
(GPT2._fp8_calibrate, with `calibrated` False) on the backend's own products, whose casts only
measure each tensor: with no history yet every scale would be 1, which flushes gradients of 1e-6
to zero in E5M2, and an FP8 pass at those scales would measure the gradients it had flushed (a
first step's gradient norm half the bf16 one, on an H100).

Rows not a multiple of ROW_MULTIPLE (a sampling context) run the backend's own matmuls, on the
CPU as on the GPU. The forward's GELU epilogue and the master weights are as without FP8, the
backward's dGELU follows the FP8 product, and fc's bias gradient (the one bias the model's
backward asks a linear for) is summed by the cast of its output gradient, which reads that
tensor anyway.

`kernels` is the backend's FP8 module: cast, cast_transpose, update_scales, forward,
backward_inp, backward_weight, and BYTE, the dtype FP8 values are stored in."""
from collections import namedtuple

import numpy as np

from llmpy import fp8

HISTORY = 16                # passes of largest |x| kept per tensor (Transformer Engine's recipe)
# rows in multiples of this run in FP8: cuBLASLt's FP8 products take sizes in multiples of 16, and
# 32 starts each row of a transposed copy (rows bytes long) on a 32-byte sector
ROW_MULTIPLE = 32
LINEARS = ("qkvw", "attprojw", "fcw", "fcprojw")
Scale = namedtuple("Scale", "scale inv amax")      # one tensor's, each a 1-element device view


class Fp8Linears:
    def __init__(self, backend, kernels, cfg, params, B, T):
        self._backend, self._kernels = backend, kernels
        xp, byte = backend.xp, kernels.BYTE
        L, C = cfg.num_layers, cfg.channels
        # one slot per (layer, linear): its weight's address finds it. E4M3 tensors: slots'
        # inputs at [0, 4L), weights at [4L, 8L); E5M2: slots' output gradients at [0, 4L)
        self.slots, self.weights = {}, []
        for l in range(L):
            for name in LINEARS:
                weight = params[name][l]
                self.slots[kernels.address(weight)] = len(self.weights)
                OC, Cin = weight.shape
                self.weights.append((weight, xp.empty((OC, Cin), byte), xp.empty((Cin, OC), byte)))
        n = len(self.weights)
        self.e4m3 = _Scales(xp, kernels, 2 * n)
        self.e5m2 = _Scales(xp, kernels, n)
        # scratch for one linear at a time: the FP8 input and output gradient, the latter's transpose
        widest = B * T * 4 * C
        self.x = xp.empty(widest, byte)
        self.d, self.d_t = xp.empty(widest, byte), xp.empty(widest, byte)
        # each linear's FP8 input transposed, from its forward to its backward's dweight product:
        # B*T*7C bytes a layer (3.9 GiB for d12 at B=64) for one cast pass fewer in the backward
        self.x_t = [xp.empty(B * T * w.shape[1], byte) for w, _, _ in self.weights]
        self.calibrated = False

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def state(self):
        """The scales' state, JSON-able, for a checkpoint: a resumed run casts as this one would."""
        return {"e4m3": self.e4m3.state(self._backend), "e5m2": self.e5m2.state(self._backend)}

    def load_state(self, state):
        self.e4m3.load_state(self._backend, state["e4m3"])
        self.e5m2.load_state(self._backend, state["e5m2"])
        self.calibrated = True

    def forget(self):
        """Back to no history: the next pass calibrates (after a trial pass that is not the run's)."""
        self.e4m3.forget()
        self.e5m2.forget()
        self.calibrated = False

    def start_forward(self):
        """The scales from every tensor's history, this pass's casts of the weights (their largest
        |x| recorded for the next)."""
        self.e4m3.update(fp8.E4M3)
        self.e5m2.update(fp8.E5M2)
        for i, (weight, q, q_t) in enumerate(self.weights):
            s = self._weight_scale(i)
            self._kernels.cast_transpose(q, q_t, s.amax, weight, s.scale, fp8.E4M3)

    # ------------------------------------------------------------------------------------------
    # the model's matmul ops

    def matmul_forward(self, out, inp, weight, bias):
        slot = self._slot(inp, weight)
        if slot is None:
            return self._backend.matmul_forward(out, inp, weight, bias)
        self._forward(slot, out, inp, bias, None)

    def matmul_gelu_forward(self, out, pre_gelu, inp, weight, bias):
        slot = self._slot(inp, weight)
        if slot is None:
            return self._backend.matmul_gelu_forward(out, pre_gelu, inp, weight, bias)
        self._forward(slot, out, inp, bias, pre_gelu)

    def matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        slot = self._slot(inp, weight, dout)
        if slot is None:
            return self._backend.matmul_backward(dinp, dweight, dbias, dout, inp, weight)
        self._backward(slot, dinp, dweight, dbias, dout, None)

    def gelu_matmul_backward(self, dinp, dweight, dbias, dout, inp, weight, pre_gelu):
        slot = self._slot(inp, weight, dout)
        if slot is None:
            return self._backend.gelu_matmul_backward(dinp, dweight, dbias, dout, inp, weight, pre_gelu)
        self._backward(slot, dinp, dweight, dbias, dout, pre_gelu)

    # ------------------------------------------------------------------------------------------

    def _slot(self, inp, weight, dout=None):
        """The product's slot where it runs in FP8, None where the backend runs it: rows not a
        multiple of ROW_MULTIPLE, a weight not one of the blocks' four, and the calibrating pass,
        whose casts only measure the operand this product casts (the input forward, dout
        backward)."""
        rows = inp.size // weight.shape[1]
        slot = None if rows % ROW_MULTIPLE else self.slots.get(self._kernels.address(weight))
        if slot is None or self.calibrated:
            return slot
        if dout is None:
            self._cast_input(slot, inp)
        else:
            self._cast_gradient(slot, dout)
        return None

    def _weight_scale(self, slot):
        """The slot's weight's E4M3 scale: after the inputs' (__init__'s layout)."""
        return self.e4m3.at(len(self.weights) + slot)

    def _cast_input(self, slot, inp):
        """inp as E4M3 (N, C) into the scratch, returned, and transposed into the slot's kept x_t."""
        C = self.weights[slot][0].shape[1]
        N = inp.size // C
        x, x_t = self.x[:N * C].reshape(N, C), self.x_t[slot][:N * C].reshape(C, N)
        s = self.e4m3.at(slot)
        self._kernels.cast_transpose(x, x_t, s.amax, inp.reshape(N, C), s.scale, fp8.E4M3)
        return x

    def _cast_gradient(self, slot, dout, dbias=None):
        """dout as E5M2 (N, OC) and transposed, into the scratch; with dbias, the bias gradient
        summed by the same pass."""
        OC = self.weights[slot][0].shape[0]
        N = dout.size // OC
        d, d_t = self.d[:N * OC].reshape(N, OC), self.d_t[:N * OC].reshape(OC, N)
        s = self.e5m2.at(slot)
        self._kernels.cast_transpose(d, d_t, s.amax, dout.reshape(N, OC), s.scale, fp8.E5M2,
                                     dbias=dbias)
        return d, d_t

    def _forward(self, slot, out, inp, bias, pre_gelu):
        weight, w, _ = self.weights[slot]
        OC, C = weight.shape
        N = inp.size // C
        x = self._cast_input(slot, inp)
        xs, ws = self.e4m3.at(slot), self._weight_scale(slot)
        self._kernels.forward(out.reshape(N, OC), x, xs.inv, w, ws.inv, bias=bias,
                              pre_gelu=None if pre_gelu is None else pre_gelu.reshape(N, OC))

    def _backward(self, slot, dinp, dweight, dbias, dout, pre_gelu):
        weight, _, w_t = self.weights[slot]
        OC, C = weight.shape
        N = dout.size // OC
        xs, ws, ds = self.e4m3.at(slot), self._weight_scale(slot), self.e5m2.at(slot)
        d, d_t = self._cast_gradient(slot, dout, dbias)
        self._kernels.backward_inp(dinp.reshape(N, C), d, ds.inv, w_t, ws.inv,
                                   pre_gelu=None if pre_gelu is None else pre_gelu.reshape(N, C))
        x_t = self.x_t[slot][:N * C].reshape(C, N)
        self._kernels.backward_weight(dweight, d_t, ds.inv, x_t, xs.inv)


class _Scales:
    """The scales of `n` tensors of one format: scale, its inverse (cuBLASLt multiplies the
    product by it), this pass's largest |x| and the history; scales start at 1. Each inverse
    starts a row of INV_STRIDE floats: cuBLASLt reads it through a scale pointer, which must be
    16-byte aligned (a pointer 4 bytes into an array made cublasLtMatmul refuse the product)."""

    INV_STRIDE = 4
    ARRAYS = ("scale", "inv", "amax", "history")

    def __init__(self, xp, kernels, n):
        self._kernels = kernels
        self.scale, self.inv = xp.empty(n, xp.float32), xp.empty((n, self.INV_STRIDE), xp.float32)
        self.amax, self.history = xp.empty(n, xp.float32), xp.empty((n, HISTORY), xp.float32)
        self.forget()

    def at(self, i):
        return Scale(self.scale[i:i + 1], self.inv[i, :1], self.amax[i:i + 1])

    def update(self, fmt):
        self._kernels.update_scales(self.scale, self.inv, self.history, self.amax, fmt)

    def forget(self):
        self.scale.fill(1)
        self.inv.fill(1)
        self.amax.fill(0)
        self.history.fill(0)

    def state(self, backend):
        return {name: backend.to_host(getattr(self, name)).tolist() for name in self.ARRAYS}

    def load_state(self, backend, state):
        for name in self.ARRAYS:
            getattr(self, name)[...] = backend.to_device(np.asarray(state[name], np.float32))

