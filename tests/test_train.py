"""train_gpt2.py as a user runs it: a real subprocess on small shards and model files made here."""
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmpy.shards import write_datafile
from llmpy.checkpoint import read_model, read_state, write_model, write_state
from llmpy.config import GPT2Config, from_descriptor
from llmpy.schedulers import learning_rate
from llmpy.testing.compare import assert_close
from llmpy.testing.torch_gpt2 import TorchGPT2
from tests.helpers import run_program
from tests.test_gpt2 import TINY, random_params
from tests.test_hellaswag import CHOOSER, SAMPLE, chooser_params

ROOT = Path(__file__).resolve().parents[1]
STEP_LINE = re.compile(r"^step +(\d+)/(\d+) \| loss (\S+) \| norm (\S+) \| lr (\S+) \| (\S+) ms \| (\d+) tok/s \| eta (\S+)$")


def run(*args, check=True):
    return run_program("train_gpt2.py", *args, check=check)


def losses(stdout):
    return {int(m[1]): m[3] for m in map(STEP_LINE.match, stdout.splitlines()) if m}




def test_step_lines_have_llm_c_form_and_loss_falls(tiny_run):
    r = run(*tiny_run, "-x", 30, "-l", 3e-3, "-v", 10, "-m", 2, "-a", 1)
    lines = [line for line in r.stdout.splitlines() if line.startswith("step")]
    assert len(lines) == 30 and all(STEP_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("step    1/30 | loss ")
    loss = losses(r.stdout)
    assert float(loss[30]) < 0.5 * float(loss[1])       # -a 1: one batch, overfit
    assert len(re.findall(r"^val loss \d+\.\d{6}$", r.stdout, re.M)) == 4   # steps 0, 10, 20, 30


def test_main_log_has_llm_c_lines(tiny_run, tmp_path):
    run(*tiny_run, "-x", 4, "-v", 2, "-m", 1, "-o", tmp_path / "out")
    log = (tmp_path / "out" / "main.log").read_text().splitlines()
    assert log[0].startswith("s:0 tel:")
    assert re.fullmatch(r"s:1 trl:\d+\.\d+ lr:\S+ norm:\S+ dt:\S+ tps:\d+", log[1])
    assert sum(line.startswith("s:") and "trl:" in line for line in log) == 4


def test_resumed_run_prints_the_same_losses_bit_for_bit(tiny_run, tmp_path):
    flags = [*tiny_run, "-x", 6, "-v", 0, "-l", 1e-3, "-o", tmp_path / "out", "-n", 3]
    full = losses(run(*flags).stdout)
    (tmp_path / "out" / "DONE_00000006").unlink()         # as if killed after step 3's checkpoint
    resumed = run(*flags, "-y", 1)
    assert "resumed from step 3" in resumed.stdout
    assert losses(resumed.stdout) == {k: full[k] for k in (4, 5, 6)}


def norms(stdout):
    return {int(m[1]): float(m[4]) for m in map(STEP_LINE.match, stdout.splitlines()) if m}


def test_gradient_accumulation_trains_like_the_big_batch(tiny_run):
    # in file order: shuffled, a sample is B*T tokens, so another B reads another order
    big = run(*tiny_run, "-b", 4, "-x", 3, "-v", 0, "--shuffle", 0).stdout
    big_losses, big_norms = losses(big), norms(big)
    accumulated = run(*tiny_run, "-d", 64, "-x", 3, "-v", 0, "--shuffle", 0)       # 2 micro-steps of B=2
    assert "2 micro-steps" in accumulated.stdout
    for step, loss in losses(accumulated.stdout).items():
        assert abs(float(loss) - float(big_losses[step])) < 2e-6, step
    # the same gradient, not only the same updates: clipping and AdamW's m / sqrt(v) hide a
    # gradient scaled by a constant (micro-steps summed rather than averaged) from the losses
    for step, norm in norms(accumulated.stdout).items():
        assert abs(norm - big_norms[step]) <= 1e-5 * big_norms[step], step


@pytest.mark.parametrize("beta1, beta2, eps, grad_clip", [(0.9, 0.999, 1e-8, 0.0), (0.8, 0.9, 1e-5, 0.05)],
                         ids=["llm.c's train_gpt2.c recipe", "other values, clipping every step"])
def test_adamw_flags_train_like_torch_adamw_with_those_settings(tiny_run, tmp_path, beta1, beta2, eps, grad_clip):
    steps, lr, wd = 4, 1e-3, 0.1
    r = run(*tiny_run, "-x", steps, "-v", 0, "--shuffle", 0, "-k", "constant", "-l", lr, "-c", wd,
            "--beta1", beta1, "--beta2", beta2, "--eps", eps, "--grad_clip", grad_clip, "-o", tmp_path / "out", "-n", steps)
    ref = TorchGPT2(TINY, random_params(TINY, seed=0))
    opt = ref.adamw(lr=lr, weight_decay=wd, betas=(beta1, beta2), eps=eps)
    tokens = np.fromfile(tmp_path / "train.bin", dtype="<u2", offset=1024).astype(np.int64)
    printed = losses(r.stdout)
    for step in range(steps):
        buf = tokens[32 * step:32 * step + 33]          # B=2, T=16 in file order
        opt.zero_grad()
        _, loss = ref(buf[:-1].reshape(2, 16), buf[1:].reshape(2, 16))
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), grad_clip)
        opt.step()
        assert abs(float(printed[step + 1]) - loss.item()) < 2e-6, f"loss at step {step + 1}"
    params = read_model(tmp_path / "out" / f"model_{steps:08d}.bin")[1]
    assert_close(params, ref.flat(), 1e-5, f"params after {steps} steps")


def test_help_lists_the_batch_order_and_adamw_flags():
    out = run("--help").stdout
    for flag in ("--shuffle", "--beta1", "--beta2", "--eps", "--grad_clip"):
        assert flag in out, flag


def independent_model_file(path, cfg, params):
    """An llm.c model file written with struct and raw bytes, not llmpy's writer."""
    header = [20240326, 3, cfg.max_seq_len, cfg.vocab_size, cfg.num_layers, cfg.num_heads,
              cfg.channels, cfg.padded_vocab_size] + [0] * 248
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(params.astype("<f4").tobytes())


def test_d12_llm_c_file_loads_and_first_loss_matches_torch(tmp_path):
    cfg = from_descriptor("d12")
    params = random_params(cfg, seed=3)
    independent_model_file(tmp_path / "d12.bin", cfg, params)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, 1000)
    write_datafile(tmp_path / "train.bin", tokens)
    r = run("-e", tmp_path / "d12.bin", "-i", tmp_path / "train.bin", "-b", 2, "-t", 64,
            "-x", 1, "-v", 0, "-s", 0, "--shuffle", 0)
    inputs, targets = tokens[:128].reshape(2, 64), tokens[1:129].reshape(2, 64)
    with torch.no_grad():
        _, loss_ref = TorchGPT2(cfg, params)(inputs, targets)
    assert abs(float(losses(r.stdout)[1]) - loss_ref.item()) < 1e-5 * loss_ref.item()


def step_lines(stdout):
    return [m for m in map(STEP_LINE.match, stdout.splitlines()) if m]


def log_without_timings(path):
    """main.log with the dt/tps fields (wall-clock) taken out."""
    return [re.sub(r" dt:\S+ tps:\S+", "", line) for line in path.read_text().splitlines()]


def test_every_step_line_ends_with_an_eta_that_reaches_zero(tiny_run):
    lines = step_lines(run(*tiny_run, "-x", 5, "-v", 0).stdout)
    assert len(lines) == 5 and all(re.fullmatch(r"\d+s|\d+m\d\ds|\d+h\d\dm", m[8]) for m in lines)
    assert lines[-1][8] == "0s"


# a tiny model with GPT-2's vocabulary, so that it can sample from <|endoftext|> and decode
TINY_GPT2_VOCAB = GPT2Config(max_seq_len=16, vocab_size=50257, padded_vocab_size=50304, num_layers=2,
                             num_heads=2, channels=16)


def test_resume_with_everything_on_continues_bit_for_bit(tmp_path):
    """Accumulation, wsd schedule with warmup, weight decay, both outlier guards, sampling and val:
    stopped after step 4's checkpoint and resumed, the run prints and logs what the run that
    never stopped did, samples included."""
    write_datafile(tmp_path / "train.bin", np.random.default_rng(0).integers(0, 50257, 3000))
    write_model(tmp_path / "m.bin", TINY_GPT2_VOCAB, random_params(TINY_GPT2_VOCAB, seed=0))
    flags = ["-e", tmp_path / "m.bin", "-i", tmp_path / "train.bin", "-j", tmp_path / "train.bin",
             "-b", 2, "-t", 16, "-x", 8, "-d", 64, "-k", "wsd", "-u", 2, "-q", 0.1, "-l", 1e-3, "-c", 0.1,
             "-sl", 3, "-sg", 3, "-v", 2, "-m", 1, "-s", 2, "-g", 4, "--top_k", 5, "-o", tmp_path / "out", "-n", 2]
    full = run(*flags)
    full_log = log_without_timings(tmp_path / "out" / "main.log")
    for step in (6, 8):                                    # as if killed after step 4's checkpoint
        (tmp_path / "out" / f"DONE_{step:08d}").unlink()
    resumed = run(*flags, "-y", 1)
    assert "resumed from step 4" in resumed.stdout
    assert losses(resumed.stdout) == {k: v for k, v in losses(full.stdout).items() if k > 4}
    samples = re.findall(r"generating:\n---\n(.*?)\n---", full.stdout, re.S)
    assert len(samples) == 4 and re.findall(r"generating:\n---\n(.*?)\n---", resumed.stdout, re.S) == samples[2:]
    assert log_without_timings(tmp_path / "out" / "main.log") == full_log


def test_checkpoints_keep_the_newest_k_plus_every_mth_step(tiny_run, tmp_path):
    run(*tiny_run, "-x", 10, "-v", 0, "-o", tmp_path / "out", "-n", 2, "-nk", 2, "-nm", 4)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name not in ("main.log", ".llmpy.lock"))
    assert names == sorted(f"{kind}_{s:08d}{suffix}" for s in (4, 8, 10)
                           for kind, suffix in (("DONE", ""), ("model", ".bin"), ("state", "_00000.bin")))


def test_lr_column_follows_the_chosen_schedule(tiny_run):
    r = run(*tiny_run, "-x", 10, "-v", 0, "-k", "wsd", "-u", 2, "-l", 1e-3, "-q", 0.0)
    printed = [float(m[5]) for m in step_lines(r.stdout)]
    expected = [learning_rate("wsd", s, 1e-3, 2, 10, 0.0) for s in range(10)]
    assert printed == [float(f"{lr:.2e}") for lr in expected]


def test_recompute_flag_reaches_the_model_and_leaves_losses_unchanged(tiny_run):
    plain = run(*tiny_run, "-x", 2, "-v", 0)
    r = run(*tiny_run, "-x", 2, "-v", 0, "-r", 2)
    assert "recompute 2" in r.stdout
    for step, loss in losses(r.stdout).items():
        assert abs(float(loss) - float(losses(plain.stdout)[step])) < 1e-6


@pytest.fixture
def spike_run(tmp_path):
    """100 steps of one repeated token (the loss and grad norm settle near 0), then random tokens."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([np.full(100 * 32, 5), rng.integers(0, TINY.vocab_size, 2000)])
    write_datafile(tmp_path / "spike.bin", tokens)
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    return ["-e", tmp_path / "tiny.bin", "-i", tmp_path / "spike.bin", "-b", 2, "-t", 16, "-s", 0, "-v", 0,
            "-x", 102, "-l", 1e-2, "-o", tmp_path / "out", "--shuffle", 0]


def test_loss_spike_skips_the_update_and_is_logged(spike_run, tmp_path):
    r = run(*spike_run, "-sl", 5)
    assert re.search(r"^skipping update due to loss z-score of \d+\.\d+$", r.stdout, re.M)
    assert re.search(r"^s:101 skip_lossz:\d+\.\d+$", (tmp_path / "out" / "main.log").read_text(), re.M)
    assert "grad z-score" not in r.stdout


def test_grad_norm_spike_skips_the_update_and_is_logged(spike_run, tmp_path):
    r = run(*spike_run, "-sg", 5)
    assert re.search(r"^skipping update due to grad z-score of \d+\.\d+$", r.stdout, re.M)
    assert "skip_gradz:" in (tmp_path / "out" / "main.log").read_text()


def test_non_finite_losses_skip_updates_until_max_skips_stops_the_run(tiny_run, tmp_path):
    # lr 1e30: the first update leaves finite weights of ~1e30, whose products overflow from then on
    r = run(*tiny_run, "-x", 10, "-v", 0, "-l", 1e30, "--max_skips", 3, "-o", tmp_path / "out", "-n", 1, check=False)
    assert r.stdout.count("skipping update: loss nan") == 3
    assert "s:2 skip_lossz:nan" in (tmp_path / "out" / "main.log").read_text()
    assert_one_line_error(r, "step 4: 3 updates in a row were skipped", "--max_skips 3",
                          f"resume from step 3 with -y 1 -o {tmp_path / 'out'}")
    np.testing.assert_array_equal(read_model(tmp_path / "out" / "model_00000003.bin")[1],
                                  read_model(tmp_path / "out" / "model_00000001.bin")[1])


def test_a_step_that_makes_the_weights_non_finite_writes_no_checkpoint_and_prunes_none(tiny_run, tmp_path):
    flags = [*tiny_run, "-v", 0, "-o", tmp_path / "out", "-n", 1, "-nk", 1]
    run(*flags, "-x", 2)
    r = run(*flags, "-x", 3, "-y", 1, "-l", 1e39, check=False)    # inf in fp32: AdamW writes inf
    assert_one_line_error(r, "checkpoint 3 not written (the newest complete one is step 2): step 3: wte holds")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".llmpy.lock",
        "DONE_00000002", "main.log", "model_00000002.bin", "state_00000002_00000.bin"]


def test_seed_draws_a_fresh_model_s_weights(tiny_run):
    # step 1's loss is the fresh weights' on the first batch
    seven, seven_again, eight = (losses(run(*tiny_run, "-e", "d6", "-x", 1, "-v", 0, "--seed", seed).stdout)[1]
                                 for seed in (7, 7, 8))
    assert seven == seven_again != eight


def test_without_thresholds_no_update_is_skipped(spike_run):
    assert "skipping" not in run(*spike_run).stdout


@pytest.fixture
def chooser_run(tmp_path):
    """The HellaSwag chooser model (tests/test_hellaswag.py), the sample as an eval file, and
    data in GPT-2's vocabulary; -l 0 keeps the weights as they are."""
    rng = np.random.default_rng(0)
    write_datafile(tmp_path / "train.bin", rng.integers(0, 50257, 3000))
    write_model(tmp_path / "chooser.bin", CHOOSER, chooser_params())
    evalfile = tmp_path / "hellaswag_val.bin"
    subprocess.run([sys.executable, str(ROOT / "dev/data/hellaswag.py"), "--jsonl", str(SAMPLE), "--out", str(evalfile)],
                   check=True, capture_output=True, cwd=ROOT)
    return ["-e", tmp_path / "chooser.bin", "-i", tmp_path / "train.bin", "-j", tmp_path / "train.bin",
            "-b", 4, "-t", 32, "-l", 0, "--hellaswag", evalfile]


def test_hellaswag_accuracy_is_printed_and_logged_every_v_steps(chooser_run, tmp_path):
    r = run(*chooser_run, "-x", 2, "-v", 1, "-m", 1, "-s", 0, "-h", 1, "-o", tmp_path / "out")
    assert re.search(r"^batch: .* \| val 1 batches \| HellaSwag 6 examples$", r.stdout, re.M)
    assert r.stdout.count("HellaSwag: 4/6 = 0.666667") == 2            # steps 1 and 2, not 0
    log = (tmp_path / "out" / "main.log").read_text().splitlines()
    assert [line for line in log if "eval:" in line] == ["s:1 eval:0.666667", "s:2 eval:0.666667"]
    assert re.search(r"^done: 2 steps, .* \| HellaSwag 0\.666667$", r.stdout, re.M)     # the closing line


def test_sample_continues_the_prompt_after_each_s_steps_not_before_the_first(chooser_run):
    r = run(*chooser_run, "-x", 2, "-v", 0, "-s", 1, "-g", 3, "--prompt", "A man", "--top_k", 1)
    assert r.stdout.count("generating:\n---\nA man banana banana banana\n---") == 2     # steps 1 and 2


def test_seed_picks_the_samples(tmp_path):
    write_datafile(tmp_path / "train.bin", np.random.default_rng(0).integers(0, 50257, 3000))
    write_model(tmp_path / "m.bin", TINY_GPT2_VOCAB, random_params(TINY_GPT2_VOCAB, seed=0))

    def sample(seed):       # at temperature 1 over the whole vocabulary
        r = run("-e", tmp_path / "m.bin", "-i", tmp_path / "train.bin", "-b", 2, "-t", 16, "-x", 1, "-v", 0,
                "-s", 1, "-g", 8, "--seed", seed)
        return re.findall(r"generating:\n---\n(.*?)\n---", r.stdout, re.S)

    three, three_again, four = sample(3), sample(3), sample(4)
    assert len(three) == 1 and three == three_again != four


def test_auto_batch_without_memory_pressure_takes_the_whole_total_batch(tiny_run):
    r = run(*tiny_run, "-b", "auto", "-d", 64, "-x", 1, "-v", 0)
    assert "-b auto: chose B=4 -r 0" in r.stdout and "total 64 tokens = 1 micro-steps" in r.stdout


def test_auto_batch_resumed_starts_at_the_checkpoint_s_b(tiny_run, tmp_path):
    # B=2 chosen by hand; -b auto alone would take the whole total batch, B=4
    run(*tiny_run, "-d", 64, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    r = run(*tiny_run, "-b", "auto", "-d", 64, "-x", 3, "-v", 0, "-o", tmp_path / "out", "-y", 1)
    assert "-b auto: chose B=2 -r 0" in r.stdout and "resumed from step 2" in r.stdout


# every module imported, and the script compiled, before the limit: what the limit leaves is the
# run's (the compiler's memory would depend on the script's size: make mutate's is 7 MB)
LIMITED = """import resource, sys
import train_gpt2
with open({script!r}) as f:
    script = compile(f.read(), {script!r}, 'exec')
vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom} * 2**20,) * 2)
sys.argv = ['train_gpt2.py'] + sys.argv[1:]
exec(script, {{'__name__': '__main__', '__file__': {script!r}}})
"""


def run_with_memory_limit(headroom_mib, *args):
    """train_gpt2.py with its address space capped at what it holds after imports + headroom."""
    code = LIMITED.format(headroom=headroom_mib, script=str(ROOT / "train_gpt2.py"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, "--device", "cpu", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env)


@pytest.fixture
def memory_run(tmp_path):
    """A model whose activations at B=64, T=256 take ~300 MiB (attention's T x T dominates)."""
    cfg = GPT2Config(max_seq_len=256, vocab_size=97, padded_vocab_size=128, num_layers=2, num_heads=4, channels=64)
    write_model(tmp_path / "m.bin", cfg, random_params(cfg, seed=0))
    write_datafile(tmp_path / "train.bin", np.random.default_rng(0).integers(0, 97, 20000))
    return ["-e", tmp_path / "m.bin", "-i", tmp_path / "train.bin", "-t", 256, "-d", 16384, "-x", 1, "-v", 0, "-s", 0]


needs_rlimit = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")


@needs_rlimit
def test_auto_batch_out_of_memory_retries_with_recompute_then_smaller_batches(memory_run):
    r = run_with_memory_limit(250, *memory_run, "-b", "auto")
    assert r.returncode == 0, r.stderr
    assert "-b auto: out of memory with B=64 -r 0\n-b auto: out of memory with B=64 -r 1\n" in r.stdout
    m = re.search(r"-b auto: chose B=(\d+) -r 1", r.stdout)
    B = int(m[1])
    assert B < 64 and f"total 16,384 tokens = {16384 // (B * 256)} micro-steps" in r.stdout
    assert len(step_lines(r.stdout)) == 1


@needs_rlimit
def test_out_of_memory_without_auto_says_which_flags_help(memory_run):
    r = run_with_memory_limit(250, *memory_run, "-b", 64)
    assert_one_line_error(r, "out of memory on cpu with -b 64 -t 256 -r 0", "-r 1", "-d 16384", "-b auto")


# --- bad input: one line on stderr that names the flag or file, no traceback

def assert_one_line_error(r, *words):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_unknown_flag_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-w", 1, check=False), "-w")


def test_sequence_longer_than_the_model_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-t", 32, check=False), "-t 32", "16")


def test_total_batch_not_a_multiple_of_micro_batch_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-d", 100, check=False), "-d 100", "32")


def test_missing_model_file_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "-e", tmp_path / "nope.bin", check=False), "nope.bin")


def test_truncated_model_file_is_an_error(tiny_run, tmp_path):
    path = tmp_path / "tiny.bin"
    path.write_bytes(path.read_bytes()[:-100])
    assert_one_line_error(run(*tiny_run, check=False), str(path), "truncated")


def test_train_data_shorter_than_one_step_is_an_error(tiny_run):
    r = run(*tiny_run, "-d", 4096, "-v", 0, check=False)
    assert_one_line_error(r, f"-i {tiny_run[3]}: 4,000 tokens, less than one step of 4,096; use -x or a smaller -d")


def test_missing_data_file_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "-i", tmp_path / "none.bin", check=False), "none.bin")


@pytest.mark.parametrize("flag", ["-i", "-j"])
def test_token_id_beyond_the_model_s_vocabulary_is_a_one_line_error(tiny_run, tmp_path, flag):
    tokens = np.random.default_rng(0).integers(0, TINY.vocab_size, 2000)
    tokens[1234] = TINY.vocab_size                    # the first id past V=97 (Vp=128 has a row for it)
    write_datafile(tmp_path / "bad.bin", tokens)
    assert_one_line_error(run(*tiny_run, flag, tmp_path / "bad.bin", "-x", 1, "-m", 1, check=False),
                          f"{tmp_path / 'bad.bin'}: token id 97 at position 1,234", "vocabulary of 97")


def test_checkpointing_without_output_folder_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-n", 5, check=False), "-o")


def test_resume_without_a_checkpoint_starts_from_scratch_as_llm_c(tiny_run, tmp_path):
    r = run(*tiny_run, "-x", 2, "-v", 0, "-y", 1, "-o", tmp_path / "empty")
    assert "no complete checkpoint" in r.stdout and "resumed" not in r.stdout
    assert losses(r.stdout) == losses(run(*tiny_run, "-x", 2, "-v", 0).stdout)


BAD_VALUES = [
    (["-k", "step"], ["-k", "step"]),
    (["-b", 0], ["-b 0"]),
    (["-b", "many"], ["-b", "many"]),
    (["-x", 0], ["-x 0"]),
    (["-d", 0], ["-d 0"]),
    (["-u", -1], ["-u -1"]),
    (["-q", -0.5], ["-q -0.5"]),
    (["-c", -0.1], ["-c -0.1"]),
    (["--beta1", 1], ["--beta1 1"]),
    (["--beta1", -0.1], ["--beta1 -0.1"]),
    (["--beta2", "nan"], ["--beta2 nan"]),
    (["--eps", 0], ["--eps 0"]),
    (["--eps", "inf"], ["--eps inf"]),
    (["--grad_clip", -1], ["--grad_clip -1"]),
    (["--grad_clip", "nan"], ["--grad_clip nan"]),
    (["--shuffle", 2], ["--shuffle", "2"]),
    (["-sl", -1], ["-sl -1"]),
    (["-sg", -2], ["-sg -2"]),
    (["-n", -1], ["-n -1"]),
    (["-nk", -1], ["-nk -1"]),
    (["-nm", -3], ["-nm -3"]),
    (["-v", -1], ["-v -1"]),
    (["-m", 0], ["-m 0"]),
    (["-s", -1], ["-s -1"]),
    (["-g", 0], ["-g 0"]),
    (["-r", 3], ["-r", "3"]),
    (["-h", 2], ["-h", "2"]),
    (["-s", 5, "--temperature", 0], ["--temperature 0"]),
    (["-s", 5, "--top_k", -1], ["--top_k -1"]),
    (["--prompt", "Once"], ["--prompt", "-s"]),
    (["-b", "auto", "-d", 100], ["-d 100", "16"]),
    (["--watchdog", -5], ["--watchdog -5"]),
    (["--max_skips", -1], ["--max_skips -1"]),
    (["-l", "inf"], ["-l inf", "finite"]),
    (["-l", "nan"], ["-l nan", "finite"]),
    (["-q", "inf"], ["-q inf", "finite"]),
    (["-c", "inf"], ["-c inf", "finite"]),
    (["-sl", "nan"], ["-sl nan", "finite"]),
    (["-sg", "inf"], ["-sg inf", "finite"]),
    (["-s", 5, "--temperature", "inf"], ["--temperature inf", "finite"]),
    (["--watchdog", "nan"], ["--watchdog nan", "finite"]),
]


@pytest.mark.parametrize("flags, words", [pytest.param(f, w, id=" ".join(map(str, f))) for f, w in BAD_VALUES])
def test_bad_flag_value_is_a_one_line_error_naming_it(tiny_run, flags, words):
    assert_one_line_error(run(*tiny_run, *flags, check=False), *words)


def test_sampling_a_model_without_the_endoftext_token_is_an_error(tiny_run):
    assert_one_line_error(run(*tiny_run, "-s", 1, check=False), "-s 1", "50256", "vocabulary of 97", "-s 0")


def test_hellaswag_without_its_eval_file_is_an_error(tiny_run, tmp_path):
    r = run(*tiny_run, "-h", 1, "--hellaswag", tmp_path / "none.bin", check=False)
    assert_one_line_error(r, "none.bin", "dev/data/hellaswag.py")
    assert r.stderr.strip().endswith("or name one with --hellaswag")


def test_hellaswag_examples_longer_than_t_are_an_error_naming_the_eval_file(chooser_run):
    assert_one_line_error(run(*chooser_run, "-h", 1, "-t", 8, "-s", 0, check=False), f"{chooser_run[-1]}: ", "-t 8")


def test_resuming_with_another_sequence_length_is_an_error(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    assert_one_line_error(run(*tiny_run, "-t", 8, "-x", 4, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False),
                          "-y 1", "T=16", "-t 8")


def test_resuming_optimizer_state_of_another_size_is_an_error(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    path = tmp_path / "out" / "state_00000002_00000.bin"
    state = read_state(path)
    write_state(path, step=2, m=state["m"][:-8], v=state["v"][:-8], master=None, rng_state=state["rng_state"],
                loader_state=state["loader_state"], extra=state["extra"])
    assert_one_line_error(run(*tiny_run, "-x", 4, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False),
                          "-y 1", "AdamW state")


def test_hugging_face_folder_trains_like_the_same_weights_in_a_model_file(tiny_run, tmp_path):
    from llmpy.hf import export_hf
    export_hf(TINY, random_params(TINY, seed=0), tmp_path / "hf", tokenizer=False)   # tiny.bin's weights
    from_file = losses(run(*tiny_run, "-x", 2, "-v", 0).stdout)
    from_folder = losses(run(*tiny_run, "-e", tmp_path / "hf", "-x", 2, "-v", 0).stdout)
    assert from_folder == from_file


def test_nan_weights_in_a_model_file_are_a_one_line_error_naming_the_tensor(tiny_run, tmp_path):
    params = random_params(TINY, seed=0)
    params[-1] = np.nan                                  # lnfb's last element
    write_model(tmp_path / "tiny.bin", TINY, params)
    assert_one_line_error(run(*tiny_run, check=False), f"{tmp_path / 'tiny.bin'}: lnfb holds nan at element "
                          f"{TINY.channels - 1}")


def test_inf_weights_in_a_hugging_face_folder_are_a_one_line_error_naming_the_tensor(tiny_run, tmp_path):
    from llmpy.hf import export_hf
    params = random_params(TINY, seed=0)
    params[5] = np.inf                                   # wte
    export_hf(TINY, params, tmp_path / "hf", tokenizer=False)
    assert_one_line_error(run(*tiny_run, "-e", tmp_path / "hf", check=False), f"-e {tmp_path / 'hf'}: wte holds inf")


def test_nan_optimizer_state_in_a_checkpoint_is_a_one_line_error_naming_it(tiny_run, tmp_path):
    run(*tiny_run, "-x", 2, "-v", 0, "-o", tmp_path / "out", "-n", 2)
    path = tmp_path / "out" / "state_00000002_00000.bin"
    state = read_state(path)
    state["v"][7] = np.nan
    write_state(path, step=2, m=state["m"], v=state["v"], master=None, rng_state=state["rng_state"],
                loader_state=state["loader_state"], extra=state["extra"])
    assert_one_line_error(run(*tiny_run, "-x", 4, "-v", 0, "-o", tmp_path / "out", "-y", 1, check=False),
                          f"{path}: AdamW v holds nan at element 7")


def test_output_folder_that_is_a_file_is_an_error_before_the_model_is_built(tiny_run, tmp_path):
    (tmp_path / "file").write_text("a user's file")
    r = run(*tiny_run, "-e", tmp_path / "missing.bin", "-o", tmp_path / "file", check=False)
    assert_one_line_error(r, f"-o {tmp_path / 'file'}: exists and is not a folder")
    r = run(*tiny_run, "-o", tmp_path / "file" / "sub", check=False)
    assert_one_line_error(r, f"-o {tmp_path / 'file' / 'sub'}: cannot make the folder: Not a directory")
    assert (tmp_path / "file").read_text() == "a user's file"


LIMITED_FILE_SIZE = """import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = ['train_gpt2.py'] + sys.argv[1:]
runpy.run_path({script!r}, run_name='__main__')
"""


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_file_and_keeps_the_last_one(tiny_run, tmp_path):
    flags = [*tiny_run, "-v", 0, "-o", tmp_path / "out", "-n", 2]
    run(*flags, "-x", 2)
    size = (tmp_path / "out" / "state_00000002_00000.bin").stat().st_size
    # files may grow to just under a state file's size: Python ignores SIGXFSZ, so write() fails with EFBIG
    code = LIMITED_FILE_SIZE.format(limit=size - 1, script=str(ROOT / "train_gpt2.py"))
    r = subprocess.run([sys.executable, "-c", code, "--device", "cpu", *map(str, [*flags, "-x", 4, "-y", 1])],
                       capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(r, "checkpoint 4 not written (the newest complete one is step 2): ",
                          f"{tmp_path / 'out' / 'state_00000004_00000.bin.tmp'}: cannot write: File too large")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".llmpy.lock",
        "DONE_00000002", "main.log", "model_00000002.bin", "state_00000002_00000.bin"]
    assert "resumed from step 2" in run(*flags, "-x", 4, "-y", 1).stdout


def test_hf_dir_without_an_openai_name_is_an_error(tiny_run, tmp_path):
    assert_one_line_error(run(*tiny_run, "--hf_dir", tmp_path, check=False), "--hf_dir")


def test_runs_from_another_folder_finding_its_default_data(tmp_path):
    """-i and -j default to <data>/shakespeare/shakespeare_{train,val}.bin, where <data> is the
    repository's dev/data or $LLMPY_DATA, whatever the working folder."""
    data = tmp_path / "data" / "shakespeare"
    rng = np.random.default_rng(1)
    for split, n in (("train", 2000), ("val", 600)):
        write_datafile(data / f"shakespeare_{split}.bin", rng.integers(0, TINY.vocab_size, n))
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", "cpu", "-e", str(tmp_path / "tiny.bin"),
                        "-b", "2", "-t", "16", "-x", "2", "-v", "2", "-m", "1", "-s", "0"],
                       capture_output=True, text=True, cwd=elsewhere, timeout=300,
                       env={**os.environ, "LLMPY_DATA": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr
    assert sorted(losses(r.stdout)) == [1, 2] and "train 2,000 tokens" in r.stdout
