"""dev/scaling_model.py: it prints its table, and its predictions obey what any model of data
parallel scaling must: overlap never slower, more bandwidth never slower, more nodes never a
better scaling, one node the measured intra-node number."""
import itertools
import subprocess
import sys

import pytest

from dev.scaling_model import GPUS_PER_NODE, MEASURED, T, Setup
from tests.test_train import ROOT

NODES, GBPS = (1, 2, 4, 8, 16, 32, 64), (100, 200, 400)
WAYS = ((False, 0), (False, 1), (True, 0), (True, 1))     # (overlap, ZeRO stage)


def test_the_script_prints_a_row_per_model_node_count_and_bandwidth():
    r = subprocess.run([sys.executable, "dev/scaling_model.py"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| d")]
    assert len(rows) == 2 * (1 + 6 * 3)        # one node: no network, one row
    assert rows[0].startswith("| d12 | 1 | NVLink |") and rows[-1].startswith("| d48 | 64 | 400 |")


@pytest.mark.parametrize("model", sorted(MEASURED))
def test_overlap_is_never_slower(model):
    for nodes, gbps, zero in itertools.product(NODES, GBPS, (0, 1)):
        s = Setup(model, nodes, gbps)
        assert s.tokens_per_s(True, zero) >= s.tokens_per_s(False, zero), (nodes, gbps, zero)


@pytest.mark.parametrize("model", sorted(MEASURED))
def test_more_bandwidth_is_never_slower(model):
    for nodes, (overlap, zero) in itertools.product(NODES, WAYS):
        rates = [Setup(model, nodes, gbps).tokens_per_s(overlap, zero) for gbps in GBPS]
        assert rates == sorted(rates), (nodes, overlap, zero)


@pytest.mark.parametrize("model", sorted(MEASURED))
def test_more_nodes_never_scale_better(model):
    for gbps, (overlap, zero) in itertools.product(GBPS, WAYS):
        scaling = [Setup(model, n, gbps).tokens_per_s(overlap, zero) / (n * GPUS_PER_NODE) for n in NODES]
        assert scaling == sorted(scaling, reverse=True), (gbps, overlap, zero)


@pytest.mark.parametrize("model", sorted(MEASURED))
def test_one_node_is_the_measured_step_plus_the_measured_cost_of_several_gpus(model):
    m = MEASURED[model]
    extra = m["node_extra_ms"] * (2 * 7 / 8) / (2 * (m["node_gpus"] - 1) / m["node_gpus"])
    expected = GPUS_PER_NODE * m["B"] * T / ((m["step_ms"] + extra) / 1e3)
    for gbps, (overlap, zero) in itertools.product(GBPS, WAYS):
        assert Setup(model, 1, gbps).tokens_per_s(overlap, zero) == pytest.approx(expected, rel=1e-12)
