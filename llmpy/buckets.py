"""Gradient buckets: the ranges of the flat gradient buffer that the backward completes together,
so that each can be reduced over the processes while the backward of the layers below runs.

llm.c's layout (llmpy/config.py) stores each per-layer tensor for all layers back to back (ln1w
of layers 0..L-1, then ln1b of layers 0..L-1, ...), so one layer's gradients are not one slice
of the buffer but twelve, one in each per-layer tensor. The backward runs from layer L-1 down
to 0 and writes nothing of a layer once it has passed it, so after layer l the slices of layers
l..L-1 are final: a bucket is the slices of a run of whole layers, adjacent slices merged. lnfw
and lnfb (done before layer L-1) and the ZeRO-1 padding go with layer L-1; wte and wpe are done
only by the encoder's backward, after layer 0 (wte also takes the LM head's gradient first).
"""
import math

from llmpy.config import param_shapes

EMBEDDINGS = -1     # the point where wte and wpe are done: after the encoder's backward
_WHOLE = ("wte", "wpe", "lnfw", "lnfb")   # the tensors with no layer axis


def layer_units(cfg, size):
    """[(ready, ranges)] for each layer, from L-1 down to 0, then the embeddings: `ready` is the
    layer after whose backward the ranges [(start, end)] of a flat buffer of `size` elements
    are final (EMBEDDINGS for wte and wpe)."""
    shapes = param_shapes(cfg)
    offsets, offset = {}, 0
    for name, shape in shapes.items():
        offsets[name] = offset
        offset += math.prod(shape)
    L = cfg.num_layers
    units = []
    for l in reversed(range(L)):
        ranges = []
        for name, shape in shapes.items():
            if name not in _WHOLE:
                n = math.prod(shape[1:])
                ranges.append((offsets[name] + l * n, offsets[name] + (l + 1) * n))
        if l == L - 1:
            ranges.append((offsets["lnfw"], size))
        units.append((l, ranges))
    units.append((EMBEDDINGS, [(0, offsets["ln1w"])]))
    return units


def plan(cfg, size, itemsize, bucket_bytes):
    """{ready: ranges}: the buckets, each of at most bucket_bytes (or one layer, where a layer is
    larger), in the order the backward completes them. A bucket's reduction can start once the
    backward has passed `ready` (a layer, or EMBEDDINGS); its ranges are sorted and merged, so
    one bucket holding everything is the single range (0, size)."""
    buckets, ready, ranges, nbytes = {}, None, [], 0
    for unit_ready, unit_ranges in layer_units(cfg, size):
        unit_bytes = sum(end - start for start, end in unit_ranges) * itemsize
        if ranges and nbytes + unit_bytes > bucket_bytes:
            buckets[ready] = merge(ranges)
            ranges, nbytes = [], 0
        ready = unit_ready
        ranges += unit_ranges
        nbytes += unit_bytes
    buckets[ready] = merge(ranges)
    return buckets


def merge(ranges):
    """Sorted, with ranges that touch joined into one."""
    merged = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def shard_counts(start, end, size, world):
    """How many elements of [start, end) fall in each rank's shard of a buffer of `size`
    (rank r's shard: [r * size / world, (r + 1) * size / world), as ZeRO-1 splits it)."""
    n = size // world
    return [max(0, min(end, (r + 1) * n) - max(start, r * n)) for r in range(world)]
