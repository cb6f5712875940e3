"""The outlier detector behind -sl/-sg (llm.c's llmc/outlier_detector.h)."""
import json
import math

import numpy as np
import pytest

from llmpy.outlier import WINDOW, OutlierDetector


def filled(values, threshold=0.0):
    d = OutlierDetector(threshold, window=len(values))
    for v in values:
        assert math.isnan(d.update(v))       # no verdict while the window fills
    return d


def test_window_is_llm_c_s_64():
    assert WINDOW == 64 and OutlierDetector().window == 64


def test_no_score_until_the_window_is_full():
    d = OutlierDetector(window=8)
    assert all(math.isnan(d.update(float(i))) for i in range(8))
    assert not math.isnan(d.update(3.0))


def test_z_score_is_against_the_window_with_the_new_value_in_place_of_the_oldest():
    d = filled([1.0, 2.0, 3.0, 4.0])
    window = np.array([10.0, 2.0, 3.0, 4.0])          # 10 replaces the oldest, 1
    expected = (10.0 - window.mean()) / window.std()   # population std, as llm.c
    assert d.update(10.0) == pytest.approx(expected, rel=1e-12)


def test_a_flat_window_scores_zero():
    d = filled([2.0] * 8)
    assert d.update(2.0) == 0.0


def spiky():
    return filled([1.0, 2.0] * 8, threshold=3.0)      # window 16: a lone spike can reach z ~ 3.87


def test_an_outlier_above_the_threshold_is_taken_back_out_of_the_window():
    d = spiky()
    before = (list(d.buffer), d.index, d.sum, d.sum_sq)
    assert d.update(100.0) > 3.0
    assert (list(d.buffer), d.index, d.sum, d.sum_sq) == before


def test_the_third_outlier_in_a_row_is_kept():
    d = spiky()
    assert d.update(100.0) > 3.0 and d.update(100.0) > 3.0
    assert 100.0 not in d.buffer
    d.update(100.0)
    assert 100.0 in d.buffer


def test_a_normal_value_resets_the_count_of_outliers_in_a_row():
    d = spiky()
    d.update(100.0)
    d.update(100.0)
    d.update(1.5)
    d.update(100.0)
    assert 100.0 not in d.buffer


def test_taking_back_at_the_first_slot_wraps_the_index():
    d = spiky()
    for v in [1.0, 2.0] * 8:          # the index comes round to 0 again
        d.update(v)
    assert d.index == 0
    d.update(100.0)
    assert d.index == 0 and 100.0 not in d.buffer


def test_without_a_threshold_outliers_stay_in_the_window():
    d = filled([1.0, 2.0] * 8)
    d.update(100.0)
    assert 100.0 in d.buffer


def test_non_finite_values_get_no_score_and_stay_out_of_the_window():
    d = spiky()
    before = (list(d.buffer), d.sum)
    assert math.isnan(d.update(math.nan)) and math.isnan(d.update(math.inf))
    assert (list(d.buffer), d.sum) == before


def test_state_round_trips_through_json_exactly():
    rng = np.random.default_rng(0)
    a = OutlierDetector(2.0, window=16)
    for v in rng.normal(3, 0.1, 40):
        a.update(v)
    b = OutlierDetector(2.0, window=16)
    b.load_state(json.loads(json.dumps(a.state())))
    later = rng.normal(3, 0.3, 40)
    assert [a.update(v) for v in later] == [b.update(v) for v in later]


def test_state_of_another_window_size_is_refused():
    with pytest.raises(ValueError, match="window"):
        OutlierDetector(window=8).load_state(OutlierDetector(window=16).state())
