"""main.log (llmpy/logger.py): llm.c's lines, resume, and the progress display's ETA; the run's
closing line (train_gpt2.RunSummary)."""
import re

import pytest

import train_gpt2
from llmpy.logger import Logger, format_eta


def test_lines_have_llm_c_s_keys(tmp_path):
    log = Logger(tmp_path)
    log.val(0, 10.5)
    log.train(1, 10.25, 6e-4, 1.5, 300.0, 1747626.7)
    log.eval(250, 0.2941)
    log.skipped(7, "loss", 6.25)
    assert (tmp_path / "main.log").read_text().splitlines() == [
        "s:0 tel:10.500000", "s:1 trl:10.250000 lr:6.000000e-04 norm:1.5000 dt:300.00 tps:1747627",
        "s:250 eval:0.294100", "s:7 skip_lossz:6.2500"]


def test_a_fresh_run_starts_an_empty_log(tmp_path):
    (tmp_path / "main.log").write_text("s:1 trl:1.0\n")
    Logger(tmp_path)
    assert (tmp_path / "main.log").read_text() == ""


def test_a_resumed_run_keeps_the_lines_up_to_its_checkpoint_and_drops_a_torn_one(tmp_path):
    (tmp_path / "main.log").write_text("s:0 tel:5.0\ns:1 trl:4.0\ns:2 trl:3.0\ns:2 tel:3.5\ns:3 trl:2.0\ns:4 tr")
    Logger(tmp_path, resume_step=2).train(3, 2.5, 1e-4, 1.0)
    assert (tmp_path / "main.log").read_text().splitlines() == [
        "s:0 tel:5.0", "s:1 trl:4.0", "s:2 trl:3.0", "s:2 tel:3.5", "s:3 trl:2.500000 lr:1.000000e-04 norm:1.0000"]


def test_without_a_folder_nothing_is_written(tmp_path):
    Logger(None).train(1, 1.0, 1.0, 1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (725, "12m05s"),
                                            (3720, "1h02m"), (86399, "23h59m"), (183600, "2d03h"), (-3, "0s")])
def test_eta_is_shown_in_the_two_largest_units(seconds, shown):
    assert format_eta(seconds) == shown


def test_the_closing_line_counts_this_runs_steps_and_tokens_and_gives_the_last_and_best_val_loss():
    summary = train_gpt2.RunSummary(2, 1000)        # resumed at step 2, 1,000 tokens a step
    summary.t0 -= 10.0                               # ten seconds ago
    for loss in (3.5, 3.25, 3.375):
        summary.val(loss)
    summary.hellaswag = 0.25
    m = re.fullmatch(r"done: 3 steps, 3,000 tokens in 10s \((\d+) tok/s\) \| val loss 3\.375000 "
                     r"\(best 3\.250000\) \| HellaSwag 0\.250000", summary.line(5))
    assert m and int(m[1]) in (299, 300)
    assert train_gpt2.RunSummary(0, 1000).line(0).startswith("done: 0 steps, 0 tokens in 0s (0 tok/s)")
    short = train_gpt2.RunSummary(0, 1000)          # under a second: still tokens over its seconds
    short.t0 -= 0.5
    assert 1900 <= int(re.search(r"\(([\d,]+) tok/s\)", short.line(1))[1].replace(",", "")) <= 2000
