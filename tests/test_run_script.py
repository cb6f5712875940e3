"""scripts/run_gpt2_124M.sh: llm.c's GPT-2 124M recipe and its resume loop, run with a stand-in
for python (no GPU, no FineWeb here)."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import train_gpt2

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_gpt2_124M.sh"
RECIPE = {"-e": "d12", "-b": "64", "-t": "1024", "-d": "524288", "-z": "1", "-c": "0.1", "-l": "0.0006",
          "-q": "0.0", "-u": "700", "-k": "cosine", "-x": "18865", "-v": "250", "-h": "1", "-y": "1"}


def script(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "RETRY_SLEEP": "0", **env})


def dry_run(ngpu):
    r = script(str(ngpu), DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout)


def flags(words):
    start = words.index("train_gpt2.py") + 1
    return dict(zip(words[start::2], words[start + 1::2]))


def test_eight_gpus_run_under_mpirun_with_the_recipe():
    words = dry_run(8)
    assert words[:4] == ["mpirun", "-np", "8", "python"]
    assert RECIPE.items() <= flags(words).items()
    assert flags(words)["-i"] == "dev/data/fineweb10B/fineweb_train_*.bin"


def test_one_gpu_runs_the_same_recipe_without_mpirun():
    words = dry_run(1)
    assert words[:2] == ["python", "train_gpt2.py"]
    assert flags(words) == flags(dry_run(8))


def test_every_flag_of_the_recipe_parses():
    words = dry_run(1)
    args = words[words.index("train_gpt2.py") + 1:]
    # -z (ZeRO) belongs to the multi-GPU work; the rest must be train_gpt2.py's flags as they are
    z = args.index("-z")
    del args[z:z + 2]
    parsed = train_gpt2.parse_args(args)
    train_gpt2.check_args(parsed)
    assert (parsed.B, parsed.total_batch, parsed.hellaswag, parsed.checkpoint_every) == (64, 524288, 1, 1000)


FAKE_PYTHON = """#!{python}
# stands in for `python train_gpt2.py ...`: each call does what the next line of the plan says
import os, sys
args = sys.argv[2:]
out = args[args.index("-o") + 1]
calls = os.path.join(out, "calls")
os.makedirs(out, exist_ok=True)
n = len(open(calls).read()) if os.path.exists(calls) else 0
open(calls, "a").write("x")
plan = os.environ["PLAN"].split(",")
step = plan[min(n, len(plan) - 1)]
if step != "none":
    open(os.path.join(out, "DONE_%08d" % int(step)), "w").close()
sys.exit(0 if step == "18865" else 1)
"""


@pytest.fixture
def fake(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_train_000001.bin").touch()
    (tmp_path / "hellaswag_val.bin").touch()
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    return {"PYTHON": str(python), "DATA": str(data), "HELLASWAG": str(tmp_path / "hellaswag_val.bin"),
            "OUT": str(tmp_path / "out")}


def test_a_crashed_run_is_resumed_until_the_last_checkpoint(fake, tmp_path):
    r = script("1", PLAN="1000,5000,18865", **fake)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "calls").read_text() == "xxx"
    assert r.stderr.count("resuming from the newest checkpoint") == 2
    assert "done: " in r.stdout


def test_runs_that_make_no_progress_stop_the_loop(fake, tmp_path):
    r = script("1", PLAN="1000,none", MAX_STALLS="2", **fake)
    assert r.returncode == 1
    assert (tmp_path / "out" / "calls").read_text() == "xxx"        # 1000, then two stalls
    assert "without a new checkpoint; giving up" in r.stderr


def test_a_finished_run_is_not_started_again(fake, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "DONE_00018865").touch()
    r = script("1", PLAN="18865", **fake)
    assert r.returncode == 0 and not (tmp_path / "out" / "calls").exists()


def test_missing_shards_say_how_to_make_them(fake, tmp_path):
    r = script("1", PLAN="18865", **{**fake, "DATA": str(tmp_path / "nothing")})
    assert r.returncode == 1 and "dev/data/fineweb.py --version 10B" in r.stderr
