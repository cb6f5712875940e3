"""Gradient buckets (llmpy/buckets.py) and when the model starts their reductions: every
gradient in exactly one bucket, each bucket final when its reduction starts, the first ones
started while the backward still has work to do. One process, with a Comm that only records."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from llmpy import buckets, cpu
from llmpy.config import from_descriptor, num_parameters, param_shapes
from llmpy.distributed import Comm
from llmpy.gpt2 import GPT2, split_flat
from tests.test_gpt2 import TINY, random_batch, random_params

B, T = 2, 8


def covered(plan):
    return sorted(r for ranges in plan.values() for r in ranges)


@pytest.mark.parametrize("cfg, size", [(TINY, num_parameters(TINY)), (TINY, num_parameters(TINY) + 40),
                                       (from_descriptor("d12"), num_parameters(from_descriptor("d12")))])
@pytest.mark.parametrize("bucket_bytes", [1, 60_000, 25 * 2**20])
def test_buckets_cover_every_gradient_exactly_once(cfg, size, bucket_bytes):
    ranges = covered(buckets.plan(cfg, size, 4, bucket_bytes))
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(end == start for (_, end), (start, _) in zip(ranges, ranges[1:])), "a gap or an overlap"


def test_one_bucket_holding_everything_is_one_range_the_one_call():
    size = num_parameters(TINY) + 40        # with ZeRO-1's padding
    assert buckets.plan(TINY, size, 4, math.inf) == {buckets.EMBEDDINGS: [(0, size)]}


def test_a_models_buckets_count_4_bytes_per_fp32_gradient():
    # a cap of exactly the whole fp32 gradient: one bucket, one range
    n = num_parameters(TINY)
    model = GPT2(TINY, cpu, 1, 8, params=random_params(TINY, seed=29), comm=SimpleNamespace(rank=0, world=2),
                 bucket_bytes=4 * n)
    assert model.buckets == {buckets.EMBEDDINGS: [(0, n)]}


def test_buckets_stay_under_the_cap_unless_one_layer_is_larger():
    cfg = from_descriptor("d12")
    size = num_parameters(cfg)
    layer = 12 * cfg.channels**2 + 13 * cfg.channels       # one layer's parameters
    plan = buckets.plan(cfg, size, 2, 4.5 * layer * 2)     # bf16: 4 layers fit, not 5
    layers = [ready for ready in plan if ready != buckets.EMBEDDINGS]
    assert layers == [8, 4, 0], "buckets of layers 11-8, 7-4, 3-0, in the backward's order"
    wte_wpe = math.prod(param_shapes(cfg)["wte"]) + math.prod(param_shapes(cfg)["wpe"])
    assert plan[buckets.EMBEDDINGS] == [(0, wte_wpe)], "wte and wpe alone: larger than the cap"


def test_a_layer_is_its_slice_of_each_of_the_twelve_per_layer_tensors():
    flat = np.zeros(num_parameters(TINY), dtype=np.float32)
    views = split_flat(flat, param_shapes(TINY))
    where = {name: [((v[l].ctypes.data - flat.ctypes.data) // 4, (v[l].ctypes.data - flat.ctypes.data) // 4
                     + v[l].size) for l in range(TINY.num_layers)]
             for name, v in views.items() if v.shape[0] == TINY.num_layers}
    units = dict(buckets.layer_units(TINY, flat.size))
    assert len(where) == 12
    assert sorted(units[0]) == sorted(w[0] for w in where.values())


def test_shard_counts_split_a_range_at_the_shard_boundaries():
    assert buckets.shard_counts(5, 27, 40, 4) == [5, 10, 7, 0]
    assert buckets.shard_counts(30, 40, 40, 4) == [0, 0, 0, 10]


class RecordingComm(Comm):
    """Two ranks in name; records the whole gradient buffer as it is when each bucket's
    all-reduce starts, each bucket reduce-scatter's ranges, and the waits and one-call
    all-reduces (with the size reduced) in order; reduces nothing."""

    def __init__(self):
        super().__init__(cpu)
        self.world = 2
        self.started, self.scattered, self.calls = [], [], []

    def start_all_reduce_mean(self, buf, ranges):
        self.started.append((ranges, buf.copy()))

    def start_reduce_scatter_mean(self, buf, ranges):
        self.scattered.append(ranges)

    def wait(self):
        self.calls.append("wait")

    def all_reduce_mean(self, buf):
        self.calls.append(("all_reduce_mean", buf.size))


def recording_model(bucket_bytes=60_000, zero=0):
    comm = RecordingComm()
    model = GPT2(TINY, cpu, B, T, params=random_params(TINY, seed=3), comm=comm,
                 bucket_bytes=bucket_bytes, zero=zero)
    model.zero_grad()
    return model, comm


def test_every_bucket_is_final_when_its_reduction_starts():
    model, comm = recording_model()
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    assert len(comm.started) == len(model.buckets) == 3
    for ranges, then in comm.started:
        for a, b in ranges:
            assert np.array_equal(then[a:b], model.grads_flat[a:b]), (a, b)


def test_reductions_start_while_the_backward_still_has_work():
    model, comm = recording_model()
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    _, first = comm.started[0]
    wte = model.grads["wte"].size
    assert not np.array_equal(first[:wte], model.grads_flat[:wte]), "wte was still to be done"


def test_only_the_micro_step_that_reduces_starts_buckets():
    model, comm = recording_model()
    model.forward_backward(*random_batch(TINY, B, T, seed=4), loss_scale=0.5)
    assert comm.started == []
    model.forward_backward(*random_batch(TINY, B, T, seed=5), loss_scale=0.5, reduce=True)
    assert len(comm.started) == 3


def test_with_zero1_the_buckets_are_reduce_scattered_not_all_reduced():
    model, comm = recording_model(zero=1)
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    assert len(comm.scattered) == len(model.buckets) == 3 and comm.started == []


def test_without_buckets_reduce_gradients_is_one_call_after_the_backward():
    model, comm = recording_model(bucket_bytes=None)
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    model.reduce_gradients()
    assert comm.started == [] and comm.calls == [("all_reduce_mean", model.grads_flat.size)]


def test_after_a_micro_step_that_started_buckets_reduce_gradients_waits_and_reduces_nothing_more():
    model, comm = recording_model()
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    model.reduce_gradients()
    assert comm.calls == ["wait"]


def test_a_step_by_forward_and_backward_after_a_bucketed_one_is_reduced_in_one_call():
    model, comm = recording_model()
    model.forward_backward(*random_batch(TINY, B, T, seed=4), reduce=True)
    model.reduce_gradients()
    comm.calls.clear()
    model.zero_grad()
    model.forward(*random_batch(TINY, B, T, seed=5))
    model.backward()
    model.reduce_gradients()
    assert comm.calls == [("all_reduce_mean", model.grads_flat.size)]
