"""train_gpt2.py's flags, in-process: llm.c's names and the defaults the README's table gives,
each flag's setting and type, the values a flag with choices refuses, no abbreviations, and each
flag's help as reviewed (tests/data/train_gpt2_flags.json)."""
import json

import pytest

import train_gpt2
from llmpy import LlmpyError
from llmpy.fetch import data_dir
from tests.helpers import ROOT

DEFAULTS = {
    "model": "d12", "hf_dir": None, "out_dir": None, "checkpoint_every": 0, "checkpoints_keep": 0, "major_every": 0,
    "resume": 0, "B": 4, "T": 1024, "total_batch": -1, "max_steps": -1, "shuffle": 1, "schedule": "cosine",
    "lr": 3e-4, "warmup": 0, "final_lr_frac": 1.0, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
    "grad_clip": 1.0, "skip_lossz": 0.0, "skip_gradz": 0.0, "recompute": 0, "fp8": 0, "zero": 0, "overlap": 1,
    "bucket_mb": 25.0, "val_every": 20, "val_batches": 20, "hellaswag": 0, "sample_every": 20, "gen_tokens": 64,
    "prompt": None, "temperature": 1.0, "top_k": 0, "overfit": 0, "device": "auto", "seed": 42, "max_skips": 16,
    "watchdog": -1.0,
    "train_data": str(data_dir() / "shakespeare" / "shakespeare_train.bin"),
    "val_data": str(data_dir() / "shakespeare" / "shakespeare_val.bin"),
    "hellaswag_file": str(data_dir() / "hellaswag" / "hellaswag_val.bin"),
}


def test_the_defaults_are_the_readmes():
    args = vars(train_gpt2.parse_args([]))
    assert args == DEFAULTS
    assert {name: type(value) for name, value in args.items()} == {name: type(v) for name, v in DEFAULTS.items()}


@pytest.mark.parametrize("flag, value, setting, parsed", [
    ("-i", "a.bin", "train_data", "a.bin"), ("-j", "b.bin", "val_data", "b.bin"), ("-e", "d6", "model", "d6"),
    ("--hf_dir", "hf", "hf_dir", "hf"), ("-o", "out", "out_dir", "out"), ("-n", "5", "checkpoint_every", 5),
    ("-nk", "3", "checkpoints_keep", 3), ("-nm", "7", "major_every", 7), ("-y", "1", "resume", 1),
    ("-b", "8", "B", 8), ("-b", "auto", "B", "auto"), ("-t", "64", "T", 64), ("-d", "4096", "total_batch", 4096),
    ("-x", "10", "max_steps", 10), ("--shuffle", "0", "shuffle", 0), ("-k", "wsd", "schedule", "wsd"),
    ("-l", "1e-3", "lr", 1e-3), ("-u", "5", "warmup", 5), ("-q", "0.1", "final_lr_frac", 0.1),
    ("-c", "0.1", "weight_decay", 0.1), ("--beta1", "0.8", "beta1", 0.8), ("--beta2", "0.99", "beta2", 0.99),
    ("--eps", "1e-6", "eps", 1e-6), ("--grad_clip", "0.5", "grad_clip", 0.5), ("-sl", "5", "skip_lossz", 5.0),
    ("-sg", "6", "skip_gradz", 6.0), ("-r", "2", "recompute", 2), ("--fp8", "1", "fp8", 1),
    ("-z", "1", "zero", 1),
    ("--overlap", "0", "overlap", 0), ("--bucket_mb", "1.5", "bucket_mb", 1.5), ("-v", "5", "val_every", 5),
    ("-m", "-1", "val_batches", -1), ("-h", "1", "hellaswag", 1), ("--hellaswag", "h.bin", "hellaswag_file", "h.bin"),
    ("-s", "3", "sample_every", 3), ("-g", "8", "gen_tokens", 8), ("--prompt", "Hi", "prompt", "Hi"),
    ("--temperature", "0.5", "temperature", 0.5), ("--top_k", "40", "top_k", 40), ("-a", "1", "overfit", 1),
    ("--device", "cpu", "device", "cpu"), ("--seed", "7", "seed", 7), ("--max_skips", "0", "max_skips", 0),
    ("--watchdog", "30", "watchdog", 30.0)])
def test_each_flag_sets_its_setting_with_its_type(flag, value, setting, parsed):
    args = vars(train_gpt2.parse_args([flag, value]))
    assert args[setting] == parsed and type(args[setting]) is type(parsed)
    assert {k: v for k, v in args.items() if k != setting} == {k: v for k, v in DEFAULTS.items() if k != setting}


CHOICES = {"-y": ["0", "1"], "--shuffle": ["0", "1"], "-k": ["cosine", "linear", "constant", "wsd"],
           "-r": ["0", "1", "2"], "--fp8": ["0", "1"], "-z": ["0", "1"], "--overlap": ["0", "1"], "-h": ["0", "1"], "-a": ["0", "1"],
           "--device": ["auto", "cpu", "cuda"]}


@pytest.mark.parametrize("flag", CHOICES)
def test_a_flag_with_choices_takes_each_and_refuses_others_in_one_line(flag):
    for choice in CHOICES[flag]:
        train_gpt2.parse_args([flag, choice])
    with pytest.raises(SystemExit) as refused:
        train_gpt2.parse_args([flag, "2" if flag != "-r" else "3"])
    assert str(refused.value).startswith(f"train_gpt2.py: error: argument {flag}: invalid choice: ")
    assert str(refused.value).endswith(" (see --help)")


def test_a_flag_is_never_abbreviated():
    with pytest.raises(SystemExit, match="unrecognized arguments: --temp 0.5"):
        train_gpt2.parse_args(["--temp", "0.5"])


def reviewed_helps():
    """Each flag's help, in the parser's order, as reviewed: a change to one shows in review there."""
    return json.loads((ROOT / "tests" / "data" / "train_gpt2_flags.json").read_text())


def test_each_flags_help_is_the_reviewed_text_in_order():
    parser = train_gpt2.arg_parser()
    helps = [(" ".join(action.option_strings), action.help) for action in parser._actions]
    assert helps == list(reviewed_helps().items())
    assert parser.description == "Train GPT-2 with llmpy (llm.c's flags)."


def test_help_lists_every_flag_with_its_default_and_exits(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")          # argparse wraps at the terminal's width
    with pytest.raises(SystemExit) as done:
        train_gpt2.parse_args(["--help"])
    printed = capsys.readouterr().out
    assert done.value.code == 0 and printed.startswith("usage: train_gpt2.py [--help] [-i TRAIN_DATA]")
    for flag in reviewed_helps():
        assert f"{flag} " in printed, flag
    assert "sequence length (default: 1024)" in printed


# check_args: the values argparse cannot check, each refused in one line naming the flag
REFUSED = [
    (["-l", "inf"], "-l inf: must be a finite number"), (["-q", "nan"], "-q nan: must be a finite number"),
    (["-c=-inf"], "-c -inf: must be a finite number"), (["-sl", "nan"], "-sl nan: must be a finite number"),
    (["-sg", "inf"], "-sg inf: must be a finite number"),
    (["--temperature", "inf"], "--temperature inf: must be a finite number"),
    (["--watchdog", "nan"], "--watchdog nan: must be a finite number"),
    (["-b", "0"], "-b 0: the micro-batch must be positive, or auto"),
    (["-t", "0"], "-t 0: the sequence length must be positive"),
    (["-d", "0"], "-d 0: must be positive, or -1"), (["-d", "-2"], "-d -2: must be positive, or -1"),
    (["-x", "0"], "-x 0: must be positive, or -1 for one epoch"),
    (["-x", "-2"], "-x -2: must be positive, or -1 for one epoch"),
    (["-l", "-0.001"], "-l -0.001: the learning rate cannot be negative"),
    (["-u", "-1"], "-u -1: warmup steps cannot be negative"),
    (["-q", "-0.5"], "-q -0.5: the final lr fraction cannot be negative"),
    (["-c", "-0.1"], "-c -0.1: weight decay cannot be negative"),
    (["--beta1", "1"], "--beta1 1.0: must be in [0, 1)"), (["--beta1", "-0.1"], "--beta1 -0.1: must be in [0, 1)"),
    (["--beta2", "1"], "--beta2 1.0: must be in [0, 1)"), (["--beta2", "-0.5"], "--beta2 -0.5: must be in [0, 1)"),
    (["--eps", "0"], "--eps 0.0: must be positive and finite"),
    (["--eps", "inf"], "--eps inf: must be positive and finite"),
    (["--grad_clip", "-1"], "--grad_clip -1.0: must be finite and not negative (0: no clipping)"),
    (["--grad_clip", "inf"], "--grad_clip inf: must be finite and not negative (0: no clipping)"),
    (["-sl", "-1"], "-sl -1.0: a z-score threshold is positive (0: off)"),
    (["-sg", "-2"], "-sg -2.0: a z-score threshold is positive (0: off)"),
    (["-n", "-1"], "-n -1: cannot be negative"), (["-nk", "-1"], "-nk -1: cannot be negative"),
    (["-nm", "-3"], "-nm -3: cannot be negative"), (["-v", "-1"], "-v -1: cannot be negative (0: never)"),
    (["-m", "0"], "-m 0: must be positive, or -1 for all"), (["-m", "-2"], "-m -2: must be positive, or -1 for all"),
    (["-s", "-1"], "-s -1: cannot be negative (0: never)"), (["-g", "0"], "-g 0: must sample at least one token"),
    (["--temperature", "0"], "--temperature 0.0: must be positive"),
    (["--top_k", "-1"], "--top_k -1: cannot be negative (0: all tokens)"),
    (["--bucket_mb", "0"], "--bucket_mb 0.0: a bucket must hold some gradients (MiB > 0)"),
    (["--prompt", "Once", "-s", "0"], "--prompt needs sampling: -s must be positive"),
    (["-n", "5"], "-n and -y need an output folder -o"), (["-y", "1"], "-n and -y need an output folder -o"),
    (["--max_skips", "-1"], "--max_skips -1: cannot be negative (0: never stop)"),
    (["--watchdog", "-0.5"], "--watchdog -0.5: seconds, 0 (off) or -1 (auto)"),
]


@pytest.mark.parametrize("flags, message", [pytest.param(f, m, id=" ".join(f)) for f, m in REFUSED])
def test_a_value_out_of_its_range_is_one_line_naming_the_flag(flags, message):
    with pytest.raises(LlmpyError) as refused:
        train_gpt2.check_args(train_gpt2.parse_args(flags))
    assert str(refused.value) == message


# the edge of each range, and the special values, are taken
TAKEN = [["-b", "1"], ["-b", "auto"], ["-t", "1"], ["-d", "1"], ["-d", "-1"], ["-x", "1"], ["-x", "-1"],
         ["-l", "0"], ["-u", "0"], ["-q", "0"], ["-c", "0"], ["--beta1", "0"], ["--beta1", "0.999"],
         ["--beta2", "0"], ["--beta2", "0.999"], ["--eps", "1e-30"], ["--grad_clip", "0"], ["-sl", "0"],
         ["-sg", "0"], ["-n", "0"], ["-nk", "0"], ["-nm", "0"], ["-v", "0"], ["-m", "1"], ["-m", "-1"],
         ["-s", "0"], ["-g", "1"], ["--temperature", "1e-6"], ["--top_k", "0"], ["--bucket_mb", "0.001"],
         ["--prompt", "Once", "-s", "1"], ["-n", "5", "-o", "out"], ["-y", "1", "-o", "out"],
         ["--max_skips", "0"], ["--watchdog", "0"], ["--watchdog", "-1"], []]


@pytest.mark.parametrize("flags", [pytest.param(f, id=" ".join(f) or "defaults") for f in TAKEN])
def test_the_edge_of_each_range_is_taken(flags):
    train_gpt2.check_args(train_gpt2.parse_args(flags))
