"""dev/vislog.py: main.log files (llmpy's and llm.c's lines) into one PNG."""
import subprocess
import sys
from pathlib import Path

import pytest

from dev.vislog import figure, main, parse_log

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_log(path, steps=20, offset=0.0):
    lines = []
    for s in range(steps + 1):
        if s % 5 == 0:
            lines.append(f"s:{s} tel:{6 - 0.1 * s + offset:.6f}")
            if s:
                lines.append(f"s:{s} eval:{0.25 + 0.002 * s:.6f}")
        if s:
            lines.append(f"s:{s} trl:{6.5 - 0.1 * s + offset:.6f} lr:{6e-4 * min(1, s / 5):.6e} "
                         f"norm:1.0 dt:300.00 tps:{1700000 + s}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_log_lines_parse_into_streams_by_key_and_step(tmp_path):
    streams = parse_log(write_log(tmp_path / "a" / "main.log"))
    assert streams["trl"][1] == pytest.approx(6.4) and streams["tel"][20] == pytest.approx(4.0)
    assert streams["eval"][5] == pytest.approx(0.26) and streams["tps"][20] == 1700020
    assert 0 not in streams["trl"]


def test_llm_c_s_own_lines_parse(tmp_path):
    path = tmp_path / "llmc.log"
    path.write_text("s:0 tel:10.9876\ns:0 trl:10.9912 lr:0.000001 norm:15.32\ns:250 eval:0.2541\n")
    streams = parse_log(path)
    assert streams["tel"] == {0: 10.9876} and streams["eval"] == {250: 0.2541}


def test_a_resumed_run_s_later_line_for_a_step_wins_and_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "main.log"
    path.write_text("s:1 trl:5.0 lr:1e-4 norm:1\ns:2 trl:4.0 lr:1e-4 norm:1\ns:2 trl:3.5 lr:1e-4 norm:1\ns:3 trl:4.")
    streams = parse_log(path)
    assert streams["trl"] == {1: 5.0, 2: 3.5, 3: 4.0}
    (tmp_path / "torn.log").write_text("s:1 trl:5.0\ns:2 trl:4.x\n")
    assert parse_log(tmp_path / "torn.log")["trl"] == {1: 5.0}


def test_two_runs_and_a_reference_make_one_png(tmp_path):
    a = write_log(tmp_path / "runA" / "main.log")
    b = write_log(tmp_path / "runB" / "main.log", offset=0.2)
    ref = write_log(tmp_path / "llmc" / "main.log", offset=-0.3)
    out = main([str(a), str(b), "--ref", str(ref), "-o", str(tmp_path / "plot.png"), "--smooth", "0.5"])
    data = Path(out).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_default_png_goes_next_to_the_first_log_and_a_summary_is_printed(tmp_path):
    log = write_log(tmp_path / "run" / "main.log")
    r = subprocess.run([sys.executable, str(ROOT / "dev/vislog.py"), str(log)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "main.png").read_bytes().startswith(PNG_MAGIC)
    assert "val loss 4.0000 at step 20" in r.stdout and "best HellaSwag 29.0%" in r.stdout


def run_vislog(*args):
    return subprocess.run([sys.executable, str(ROOT / "dev/vislog.py"), *map(str, args)], capture_output=True, text=True)


def assert_one_line_error(r, *words):
    err = r.stderr.strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_missing_log_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_vislog(tmp_path / "none.log"), "none.log")


def test_a_file_that_is_not_a_log_is_a_one_line_error(tmp_path):
    (tmp_path / "x.txt").write_text("hello\nworld\n")
    assert_one_line_error(run_vislog(tmp_path / "x.txt"), "x.txt", "main.log")


def test_labels_must_match_the_logs(tmp_path):
    log = write_log(tmp_path / "run" / "main.log")
    assert_one_line_error(run_vislog(log, "--labels", "a,b"), "--labels")


def test_a_run_keeps_its_colour_in_every_panel_even_where_another_run_is_missing(tmp_path):
    full = parse_log(write_log(tmp_path / "a" / "main.log"))
    no_val = {k: v for k, v in parse_log(write_log(tmp_path / "b" / "main.log", offset=0.5)).items()
              if k not in ("tel", "eval")}
    fig = figure([no_val, full], ["b", "a"])
    colours = {}
    for ax in fig.axes[:5]:
        for line in ax.lines:
            if line.get_label() in ("a", "b"):
                colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert all(len(c) == 1 for c in colours.values()) and colours["a"] != colours["b"]


def test_the_sixth_panel_sums_up_each_run_and_steps_are_whole_numbers(tmp_path):
    fig = figure([parse_log(write_log(tmp_path / "a" / "main.log", steps=3))], ["a"])
    texts = [t.get_text() for t in fig.axes[5].texts]
    assert len(texts) == 1 and texts[0].startswith("a\n  train loss")
    fig.canvas.draw()
    for ax in fig.axes[:5]:
        assert all(float(t).is_integer() for t in ax.get_xticks())
