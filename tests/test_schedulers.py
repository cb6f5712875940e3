"""Learning-rate schedules against llm.c's definitions (llmc/schedulers.h), worked out by hand for
10 steps, 2 of warmup, peak 1.0 and final fraction 0.1 (min 0.1)."""
import math

import pytest

from llmpy.schedulers import SCHEDULES, learning_rate


def lrs(schedule, total=10, warmup=2, max_lr=1.0, final_frac=0.1):
    return [learning_rate(schedule, step, max_lr, warmup, total, final_frac) for step in range(total)]


def test_cosine_warms_up_linearly_then_decays_by_half_cosine_to_the_final_fraction():
    # r = (step - 2) / 8 after warmup; lr = 0.1 + 0.45 (1 + cos(pi r))
    expected = [0.5, 1.0] + [0.1 + 0.45 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert lrs("cosine") == pytest.approx(expected, rel=1e-12)
    assert lrs("cosine")[6] == pytest.approx(0.55)          # halfway: halfway between 1.0 and 0.1


def test_linear_warms_up_then_falls_in_a_straight_line():
    expected = [0.5, 1.0, 1.0, 0.8875, 0.775, 0.6625, 0.55, 0.4375, 0.325, 0.2125]
    assert lrs("linear") == pytest.approx(expected, rel=1e-12)


def test_constant_has_no_warmup_as_in_llm_c():
    assert lrs("constant") == [1.0] * 10


def test_wsd_warms_up_holds_then_decays_by_one_minus_sqrt_over_the_last_fifth():
    # decay point int(0.8 * 10) = 8; step 9: s = 1/2, lr = 0.1 + (1 - sqrt(1/2)) * 0.9
    expected = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1 + (1 - math.sqrt(0.5)) * 0.9]
    assert lrs("wsd") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_never_quite_reaches_the_final_fraction_within_the_run(schedule):
    # llm.c's decay ratio is (step - warmup) / (total - warmup) < 1 for the last step too
    assert min(lrs(schedule, total=1000, warmup=0)) > 0.1


def test_gpt2_124M_recipe_peaks_at_step_700():
    rates = [learning_rate("cosine", s, 6e-4, 700, 18865, 0.0) for s in (0, 699, 700, 18864)]
    assert rates[0] == pytest.approx(6e-4 / 700)
    assert rates[1] == rates[2] == pytest.approx(6e-4)
    assert 0 < rates[3] < 1e-10


def test_unknown_schedule_is_refused_naming_the_known_ones():
    assert "wsd" in SCHEDULES
    with pytest.raises(ValueError, match="'step'.*expected one of cosine, linear, constant, wsd$"):
        learning_rate("step", 0, 1.0, 0, 10, 0.0)
