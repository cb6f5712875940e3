"""GPT-2: parameter and activation layout, forward and backward (AdamW: llmpy/optim.py).

Written once for both backends: `ops` is llmpy.cpu (NumPy, fp32) or llmpy.cuda (CuPy, bf16);
`ops.xp` is the array module. As in llm.c, every tensor is a view into one flat buffer (params,
grads, activations), and nothing is allocated inside a training step.
"""
import math

import numpy as np

from llmpy import buckets
from llmpy.config import DECAYED, num_parameters, param_shapes
from llmpy.distributed import Comm


def init_params(cfg, seed=42):
    """llm.c's fresh-model initialisation, as flat fp32: matrices N(0, 0.02), the residual
    projections (attprojw, fcprojw) scaled by 1/sqrt(2L), layernorm weights 1, biases 0.
    wte's padded rows stay zero: they never produce a logit that counts."""
    rng = np.random.default_rng(seed)
    params = np.zeros(num_parameters(cfg), dtype=np.float32)
    views = split_flat(params, param_shapes(cfg))
    for name, view in views.items():
        if name in DECAYED:
            std = 0.02 / math.sqrt(2 * cfg.num_layers) if name in ("attprojw", "fcprojw") else 0.02
            rows = view[:cfg.vocab_size] if name == "wte" else view
            rows[...] = rng.normal(0.0, std, size=rows.shape)
        elif name in ("ln1w", "ln2w", "lnfw"):
            view[...] = 1.0
    return params


def split_flat(flat, shapes):
    """Views of a flat buffer, back to back in the given order: {name: view of that shape}."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    return views


def carve(xp, specs, align=256):
    """One byte buffer holding tensors of mixed dtypes: {name: (shape, dtype)} -> (buffer, views).
    Each view starts on an `align`-byte boundary, so GPU kernels can use 16-byte vector access."""
    offsets, total = {}, 0
    for name, (shape, dtype) in specs.items():
        offsets[name] = total
        total += -(-math.prod(shape) * np.dtype(dtype).itemsize // align) * align
    buffer = xp.zeros(total, dtype=np.uint8)
    views = {}
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        views[name] = buffer[offsets[name]:offsets[name] + nbytes].view(dtype).reshape(shape)
    return buffer, views


def input_layernorm_weights(p, l, L):
    """(weight, bias) of the layernorm of layer l's input: layer l's ln1, or for l = L (the last
    layer's output) the final lnf."""
    return (p["lnfw"], p["lnfb"]) if l == L else (p["ln1w"][l], p["ln1b"][l])


# a block's activations, each (L, B, T, ...) in GPT2's buffers (block_forward says what they hold)
BLOCK_ACTS = ("qkv", "atty", "residual2", "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "residual3")


def block_forward(ops, p, l, x, ln1, attention, acts, next_ln):
    """Transformer block l's forward (GPT-2's order, as llm.c's gpt2_forward), the one that the
    training model and the sampling cache (llmpy/kvcache.py) both run: from the block's input x
    (rows, C) and ln1 = its first layernorm of x, through attention(atty, qkv) (the caller's:
    the whole sequence, or new rows against a cache), to residual3 = residual2 + MLP(ln2),
    written together with the layernorm that follows it, next_ln = (out, mean, rstd, weight,
    bias): layer l + 1's ln1, or lnf after the last. acts: the block's activations by name,
    each (rows, ...):
        qkv (3C), atty (C), residual2 = x + attproj(atty) (C), ln2 (C), ln2_mean, ln2_rstd,
        fch = fc(ln2) before GELU (4C), fch_gelu (4C), residual3 (C), btc (C, scratch)."""
    ops.matmul_forward(acts["qkv"], ln1, p["qkvw"][l], p["qkvb"][l])
    attention(acts["atty"], acts["qkv"])
    ops.matmul_forward(acts["btc"], acts["atty"], p["attprojw"][l], p["attprojb"][l])
    ops.residual_layernorm_forward(acts["residual2"], acts["ln2"], acts["ln2_mean"], acts["ln2_rstd"],
                                   x, acts["btc"], p["ln2w"][l], p["ln2b"][l])
    ops.matmul_gelu_forward(acts["fch_gelu"], acts["fch"], acts["ln2"], p["fcw"][l], p["fcb"][l])
    ops.matmul_forward(acts["btc"], acts["fch_gelu"], p["fcprojw"][l], p["fcprojb"][l])
    out, mean, rstd, weight, bias = next_ln
    ops.residual_layernorm_forward(acts["residual3"], out, mean, rstd, acts["residual2"],
                                   acts["btc"], weight, bias)


class GPT2:
    """A GPT-2 for micro-batches of up to B sequences of up to T tokens on one backend."""

    def __init__(self, cfg, ops, B, T, params=None, seed=42, recompute=0, comm=None, zero=0,
                 bucket_bytes=None, fp8=0):
        if T > cfg.max_seq_len:
            raise ValueError(f"T={T} is larger than the model's max_seq_len {cfg.max_seq_len}")
        self.cfg, self.ops, self.B, self.T = cfg, ops, B, T
        # llm.c's -r: activations recomputed in the backward instead of kept for every layer,
        # trading a little compute for memory (1: GELU output, 2: also the layernorm outputs)
        self.recomputed = {0: set(), 1: {"fch_gelu"}, 2: {"fch_gelu", "ln1", "ln2"}}[recompute]
        # data parallel over comm's ranks; with ZeRO-1 (zero=1) the gradients are reduce-scattered,
        # each rank's optimizer updating its shard of the flat buffer (llmpy/optim.py)
        self.comm, self.zero = comm or Comm(ops), zero
        xp = ops.xp
        shapes = param_shapes(cfg)
        n = num_parameters(cfg)
        if params is None:
            params = init_params(cfg, seed)
        # padded so that every rank's shard is the same size and starts 16-byte aligned
        padded = -(-n // (8 * self.comm.world)) * 8 * self.comm.world if zero else n
        flat = np.zeros(padded, dtype=np.float32)
        flat[:n] = params
        self.params_flat = ops.to_device(flat.astype(ops.param_dtype))
        self.grads_flat = xp.zeros(padded, dtype=ops.param_dtype)
        self.params = split_flat(self.params_flat, shapes)
        self.grads = split_flat(self.grads_flat, shapes)
        # fp8=1: the blocks run on the backend's FP8 ops (llmpy/fp8_linear.py), whose matmuls of
        # the four linear layers are FP8 and whose every other op is the backend's
        self.fp8 = ops.fp8_linears(cfg, self.params, B, T) if fp8 else None
        self.block_ops = self.fp8 or ops
        # with several processes and bucket_bytes, the gradients are reduced in buckets of at
        # most that size, each started as soon as the backward has finished it (overlap);
        # otherwise in one call after the backward
        self.buckets = None
        if bucket_bytes is not None and self.comm.world > 1:
            self.buckets = buckets.plan(cfg, padded, np.dtype(ops.param_dtype).itemsize, bucket_bytes)
        self._reducing = False  # the last forward_backward started the buckets' reductions
        self.acts_bytes, self._acts_full = carve(xp, self._act_specs(B, T))
        self._acts_cache = {}
        self.inputs = xp.zeros((B, T), dtype=np.int32)
        self.targets = xp.zeros((B, T), dtype=np.int32)
        self._graphs = {}       # forward_backward's captured graphs

    # ------------------------------------------------------------------------------------------
    # activations

    def _act_specs(self, B, T):
        """Every activation the backward needs, plus scratch, as {name: (shape, dtype)}.
        Per-layer tensors carry a leading L axis. LayerNorm statistics and losses are fp32."""
        cfg, ops = self.cfg, self.ops
        L, C, NH, Vp = cfg.num_layers, cfg.channels, cfg.num_heads, cfg.padded_vocab_size
        a, f = ops.act_dtype, np.float32
        att_shape, att_dtype = ops.attention_saved(B, NH, T)     # the backend decides
        specs = {
            "encoded": ((B, T, C), a),                  # token + position embeddings
            "ln1": ((L, B, T, C), a), "ln1_mean": ((L, B, T), f), "ln1_rstd": ((L, B, T), f),
            "qkv": ((L, B, T, 3 * C), a),
            "att": ((L,) + att_shape, att_dtype),      # what attention keeps for its backward
            "atty": ((L, B, T, C), a),                  # attention output, heads concatenated
            "residual2": ((L, B, T, C), a),             # residual + attention branch
            "ln2": ((L, B, T, C), a), "ln2_mean": ((L, B, T), f), "ln2_rstd": ((L, B, T), f),
            "fch": ((L, B, T, 4 * C), a), "fch_gelu": ((L, B, T, 4 * C), a),
            "residual3": ((L, B, T, C), a),             # residual2 + MLP branch: next layer's input
            "lnf": ((B, T, C), a), "lnf_mean": ((B, T), f), "lnf_rstd": ((B, T), f),
            "logits": ((B, T, Vp), a),                  # dlogits after the classifier runs
            "losses": ((B, T), f),
            # scratch: projection outputs before their residual add, and the backward's
            # gradients of activations (dresidual runs down the residual stream)
            "btc": ((B, T, C), a),
            "dresidual": ((B, T, C), a), "dbtc": ((B, T, C), a), "dbt4c": ((B, T, 4 * C), a),
        }
        for name in self.recomputed:          # one slot, rewritten by every layer
            shape, dtype = specs[name]
            specs[name] = ((1,) + shape[1:], dtype)
        return specs

    def _layer(self, a, name, l):
        """Layer l's view of a per-layer activation: its own, or the shared recomputed slot."""
        return a[name][0 if name in self.recomputed else l]

    def _input_layernorm(self, a, l):
        """(out, mean, rstd, weight, bias) of the layernorm of layer l's input: layer l's ln1,
        or for l = L (the last layer's output) the final lnf."""
        weights = input_layernorm_weights(self.params, l, self.cfg.num_layers)
        if l == self.cfg.num_layers:
            return (a["lnf"], a["lnf_mean"], a["lnf_rstd"], *weights)
        return (self._layer(a, "ln1", l), a["ln1_mean"][l], a["ln1_rstd"][l], *weights)

    def acts(self, B, T):
        """Views of the activations for a (B, T) batch within the allocated one: each tensor
        is laid out contiguously for (B, T) from the start of its allocated slot."""
        if (B, T) == (self.B, self.T):
            return self._acts_full
        if (B, T) not in self._acts_cache:
            views = {}
            for name, (shape, _) in self._act_specs(B, T).items():
                n = math.prod(shape)
                views[name] = self._acts_full[name].reshape(-1)[:n].reshape(shape)
            self._acts_cache[(B, T)] = views
        return self._acts_cache[(B, T)]

    # ------------------------------------------------------------------------------------------
    # forward

    def forward(self, inputs, targets=None, loss_scale=1.0):
        """inputs (b, t) int token ids, b <= B, t <= T. Writes logits (b, t, Vp).
        With targets, also runs the fused classifier: per-position losses, and the logits
        buffer is overwritten by dlogits = loss_scale/(b*t) * (softmax - onehot) for backward.
        loss_scale is 1/grad_accum_steps when gradients are accumulated over micro-steps."""
        self._load_batch(inputs, targets)
        self._fp8_calibrate(loss_scale)
        self._forward(targets is not None, loss_scale)

    def _load_batch(self, inputs, targets):
        """The batch into the device buffers that the forward reads (a captured graph too)."""
        b, t = inputs.shape
        if b > self.B or t > self.T:
            raise ValueError(f"batch {b}x{t} exceeds the allocated {self.B}x{self.T}")
        self.batch_shape = (b, t)
        self.inputs_bt = self.inputs[:b, :t]
        self.ops.upload(self.inputs_bt, inputs)
        if targets is not None:
            self.ops.upload(self.targets[:b, :t], targets)

    def _forward(self, with_targets, loss_scale):
        ops, cfg, p = self.block_ops, self.cfg, self.params
        b, t = self.batch_shape
        a = self.acts(b, t)
        NH = cfg.num_heads
        if self.fp8:
            self.fp8.start_forward()

        ops.encoder_forward(a["encoded"], self.inputs_bt, p["wte"], p["wpe"])
        # the first layernorm; every later one is fused with the residual add that feeds it
        out, mean, rstd, weight, bias = self._input_layernorm(a, 0)
        ops.layernorm_forward(out, mean, rstd, a["encoded"], weight, bias)
        residual = a["encoded"]
        for l in range(cfg.num_layers):
            acts = {name: self._layer(a, name, l) for name in BLOCK_ACTS}
            acts["btc"] = a["btc"]              # one scratch buffer for every layer

            def attention(atty, qkv):
                ops.attention_forward(atty, a["att"][l], qkv, NH)
            block_forward(ops, p, l, residual, self._layer(a, "ln1", l), attention, acts,
                          self._input_layernorm(a, l + 1))
            residual = a["residual3"][l]
        ops.matmul_forward(a["logits"], a["lnf"], p["wte"], None)   # tied LM head
        if with_targets:
            ops.classifier_forward_backward(a["logits"], a["losses"], self.targets[:b, :t],
                                            cfg.vocab_size, loss_scale / (b * t))

    def logits(self):
        """The last forward's logits over the real vocabulary (b, t, V), on the device."""
        b, t = self.batch_shape
        return self.acts(b, t)["logits"][..., :self.cfg.vocab_size]

    def next_logits(self, context):
        """The logits (V) of the token after `context` (a list of 1 to T token ids), on the
        device: one forward of batch 1 over the whole context."""
        self.forward(np.array([context], dtype=np.int32))
        return self.logits()[0, -1]

    def mean_loss(self):
        """Mean cross-entropy of the last forward with targets, averaged on the host: one read
        of the losses, no kernels to launch and wait for."""
        b, t = self.batch_shape
        losses = self.ops.to_host(self.acts(b, t)["losses"])
        return float(np.ascontiguousarray(losses, dtype=np.float32).mean())

    # ------------------------------------------------------------------------------------------
    # backward: runs after forward(inputs, targets), which left dlogits in the logits buffer.
    # Parameter gradients accumulate into grads; call zero_grad() at the start of a step.
    # The residual stream's gradient `dresidual` flows down through the layers: each residual
    # add passes it on unchanged, and each layernorm adds its input gradient to it.

    def zero_grad(self):
        self.grads_flat.fill(0)

    def backward(self):
        self._backward_layers(reduce=False)
        self._backward_encoder()

    def _backward_encoder(self):
        """wte's and wpe's gradients from dresidual, the gradient of the embeddings' sum."""
        self.ops.encoder_backward(self.grads["wte"], self.grads["wpe"],
                                  self.acts(*self.batch_shape)["dresidual"], self.inputs_bt)

    def _backward_layers(self, reduce):
        """The backward down to dresidual, the gradient of the embeddings' sum; with `reduce`,
        each bucket's reduction starts as soon as the layers it holds are done."""
        ops, cfg, p, g = self.block_ops, self.cfg, self.params, self.grads
        b, t = self.batch_shape
        a = self.acts(b, t)
        NH = cfg.num_heads
        dresidual, dbtc, dbt4c = a["dresidual"], a["dbtc"], a["dbt4c"]
        dqkv = dbt4c.reshape(-1)[:b * t * 3 * cfg.channels].reshape(b, t, 3 * cfg.channels)

        L = cfg.num_layers
        ops.matmul_backward(dbtc, g["wte"], None, a["logits"], a["lnf"], p["wte"])
        dresidual.fill(0)
        # A projection that ends a branch (attproj, fcproj) has dresidual, the residual gradient,
        # as its output gradient, so its bias gradient is the column sums of dresidual: taken by
        # the layernorm backward above it (layernorm_backward_sums, llmpy/fused.py), and the
        # projection's own backward takes no bias. The same for qkv's bias and dqkv, taken by
        # the attention backward (attention_backward_sums).
        ops.layernorm_backward_sums(dresidual, g["lnfw"], g["lnfb"], dbtc, a["residual3"][L - 1],
                                    p["lnfw"], a["lnf_mean"], a["lnf_rstd"], g["fcprojb"][L - 1])
        for l in reversed(range(cfg.num_layers)):
            residual = a["encoded"] if l == 0 else a["residual3"][l - 1]
            ln1, ln2, fch_gelu = (self._layer(a, n, l) for n in ("ln1", "ln2", "fch_gelu"))
            if "ln2" in self.recomputed:
                ops.layernorm_forward(ln2, a["ln2_mean"][l], a["ln2_rstd"][l],
                                      a["residual2"][l], p["ln2w"][l], p["ln2b"][l])
            if "fch_gelu" in self.recomputed:
                ops.gelu_forward(fch_gelu, a["fch"][l])
            # MLP branch: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
            # dbt4c gets the gradient of fch, the GELU's input
            ops.gelu_matmul_backward(dbt4c, g["fcprojw"][l], None, dresidual, fch_gelu,
                                     p["fcprojw"][l], a["fch"][l])
            ops.matmul_backward(dbtc, g["fcw"][l], g["fcb"][l], dbt4c, ln2, p["fcw"][l])
            ops.layernorm_backward_sums(dresidual, g["ln2w"][l], g["ln2b"][l], dbtc,
                                        a["residual2"][l], p["ln2w"][l], a["ln2_mean"][l],
                                        a["ln2_rstd"][l], g["attprojb"][l])
            # attention branch: residual2 = residual + attproj(attention(qkv(ln1(residual))))
            ops.matmul_backward(dbtc, g["attprojw"][l], None, dresidual, a["atty"][l],
                                p["attprojw"][l])
            ops.attention_backward_sums(dqkv, dbtc, a["qkv"][l], a["atty"][l], a["att"][l], NH,
                                        g["qkvb"][l])
            if "ln1" in self.recomputed:
                ops.layernorm_forward(ln1, a["ln1_mean"][l], a["ln1_rstd"][l], residual,
                                      p["ln1w"][l], p["ln1b"][l])
            ops.matmul_backward(dbtc, g["qkvw"][l], None, dqkv, ln1, p["qkvw"][l])
            ln1_backward = (dresidual, g["ln1w"][l], g["ln1b"][l], dbtc, residual, p["ln1w"][l],
                         a["ln1_mean"][l], a["ln1_rstd"][l])
            if l > 0:       # the layer below ends with fcproj; layer 0's input is the encoder's
                ops.layernorm_backward_sums(*ln1_backward, g["fcprojb"][l - 1])
            else:
                ops.layernorm_backward(*ln1_backward)
            if reduce:
                self._start_reduction(l)

    def _start_reduction(self, ready):
        """Start the reduction of the bucket, if any, that is complete at `ready` (a layer whose
        backward has just run, or buckets.EMBEDDINGS)."""
        ranges = self.buckets.get(ready)
        if ranges:
            start = self.comm.start_reduce_scatter_mean if self.zero else self.comm.start_all_reduce_mean
            start(self.grads_flat, ranges)

    def forward_backward(self, inputs, targets, loss_scale=1.0, reduce=False):
        """forward(inputs, targets, loss_scale), then backward(). Where the backend has CUDA
        graphs, the kernels of both, up to the encoder's backward, are captured into one graph
        per (b, t, loss_scale, reduce) on its first call and replayed after that: one launch
        instead of hundreds, so the GPU never waits on Python between kernels. The encoder's
        backward runs as it is (its sort takes temporary memory from CuPy's pool, which a graph
        must not). `reduce` marks a step's last micro-step: with buckets, their reductions start
        during this backward (those of the layers inside the graph), and reduce_gradients()
        waits for them."""
        self._load_batch(inputs, targets)
        reduce = reduce and self.buckets is not None
        key = (*self.batch_shape, loss_scale, reduce)
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch()
        else:
            self._fp8_calibrate(loss_scale)
            self._forward(True, loss_scale)
            self._backward_layers(reduce)
            if self.ops.capture is not None:   # the eager run made every workspace and plan
                self._graphs[key] = self.ops.capture(lambda: self._captured(loss_scale, reduce))
        self._backward_encoder()
        if reduce:
            self._start_reduction(buckets.EMBEDDINGS)
        self._reducing = reduce

    def _fp8_calibrate(self, loss_scale):
        """With FP8, each cast's scale comes from its tensor's largest |x| in the passes before
        (llmpy/fp8.py): before the first pass, one forward and backward of this batch on the
        backend's own products measures them (llmpy/fp8_linear.py; against the targets buffer
        as it stands: only magnitudes count), its gradients dropped."""
        if self.fp8 is None or self.fp8.calibrated:
            return
        grads = self.grads_flat.copy()
        self._forward(True, loss_scale)
        self._backward_layers(reduce=False)
        self.grads_flat[...] = grads
        self.fp8.calibrated = True

    def _captured(self, loss_scale, reduce):
        self._forward(True, loss_scale)
        self._backward_layers(reduce)
        if reduce and len(self.buckets) > 1:
            # the buckets of the layers (all but the last, wte's and wpe's) forked the buckets'
            # stream into the capture, and a capture must end with its streams joined back
            # (CUDA's rule): so the graph ends when they are reduced, and the encoder's backward
            # after it waits for that
            self.comm.wait()

    # ------------------------------------------------------------------------------------------
    # gradient reduction over the processes (the update: llmpy/optim.py)

    def reduce_gradients(self):
        """Average the gradients over the ranks (all of them, or with ZeRO-1 each rank's
        shard): wait for the buckets the last forward_backward started, or reduce in one call
        now; a no-op in a single process."""
        if self._reducing:
            self.comm.wait()
            self._reducing = False
        elif self.zero:
            self.comm.reduce_scatter_mean(self.grads_flat)
        else:
            self.comm.all_reduce_mean(self.grads_flat)
