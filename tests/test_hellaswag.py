"""HellaSwag: the jsonl -> llm.c eval file (dev/data/hellaswag.py), the reader and the acc_norm
scorer (llmpy/hellaswag.py), on tests/data/hellaswag_sample.jsonl: six examples in the official
format, written for these tests, scored by a model whose choice is set by hand."""
import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dev.data.hellaswag import read_jsonl, render, write_evalfile
from llmpy import LlmpyError, cpu
from llmpy.config import GPT2Config, param_shapes
from llmpy.gpt2 import GPT2, init_params, split_flat
from llmpy.hellaswag import Example, check_fits, ending_losses, evaluate, rank_slice, read_evalfile
from llmpy.testing.torch_gpt2 import TorchGPT2
from llmpy.tokenizer import get_tokenizer
from tests.helpers import terminal
from tests.test_gpt2 import TINY, random_params

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "hellaswag_sample.jsonl"
BANANA = 25996          # " banana", the one token the chooser model likes
SCORE = 5.0
# in the sample, the ending full of " banana" is at these indices; the labels agree on 4 of 6
FAVOURED = [0, 1, 2, 3, 1, 2]
LABELS = [0, 1, 2, 0, 1, 3]
CHOOSER = GPT2Config(max_seq_len=64, vocab_size=50257, padded_vocab_size=50304, num_layers=1,
                     num_heads=1, channels=8)


def chooser_params(favoured=(BANANA,), score=SCORE):
    """A GPT-2 whose every position predicts the same distribution, logits = score for the
    favoured tokens and 0 for all others: the final LayerNorm's weight is 0, so its output is
    its bias e_0 whatever came before, and the tied LM head gives token v the logit wte[v, 0]."""
    params = init_params(CHOOSER, seed=0)
    p = split_flat(params, param_shapes(CHOOSER))
    p["lnfw"][:] = 0.0
    p["lnfb"][:] = 0.0
    p["lnfb"][0] = 1.0
    p["wte"][:, 0] = 0.0
    p["wte"][list(favoured), 0] = score
    return params


def chooser(B=4, T=64):
    return GPT2(CHOOSER, cpu, B, T, params=chooser_params())


def log_sum_exp(k=1, score=SCORE):
    return math.log(CHOOSER.vocab_size - k + k * math.exp(score))


@pytest.fixture(scope="module")
def evalfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("hs") / "hellaswag_val.bin"
    r = subprocess.run([sys.executable, str(ROOT / "dev/data/hellaswag.py"), "--jsonl", str(SAMPLE),
                        "--out", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return path


# --- the jsonl and the eval file

def test_sample_is_in_the_official_jsonl_format():
    for line in SAMPLE.read_text().splitlines():
        ex = json.loads(line)
        assert set(ex) == {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "split", "split_type",
                           "label", "endings", "source_id"}
        assert ex["ctx"] == f"{ex['ctx_a']} {ex['ctx_b']}" and len(ex["endings"]) == 4


def test_endings_are_tokenized_with_a_leading_space_after_the_context():
    enc = get_tokenizer()
    ctx, endings, label = render(("A man is sitting on a roof. he", ["is ripping level tiles off."] * 4, 3),
                                 enc.encode_ordinary)
    assert ctx == enc.encode_ordinary("A man is sitting on a roof. he")
    assert endings[0] == enc.encode_ordinary(" is ripping level tiles off.") and label == 3


def test_eval_file_bytes_are_llm_c_s_format(tmp_path):
    write_evalfile(tmp_path / "e.bin", [([11, 12], [[21], [22, 23], [24], [25]], 2)])
    # built by hand: 256 int32 header, then uint16 START, bytes, index, label, 4, ctx, endings
    example = [65535, 0, 0, 2, 4, 2, 11, 12, 1, 21, 2, 22, 23, 1, 24, 1, 25]
    example[1] = 2 * len(example)
    expected = struct.pack("<256i", 20240522, 1, 1, example[1], *[0] * 252) + struct.pack(f"<{len(example)}H", *example)
    assert (tmp_path / "e.bin").read_bytes() == expected


def one_example_file(path, words):
    """An eval file of one example written by hand, each uint16 word of llm.c's layout:
    START_EXAMPLE, its length in bytes, index, label, number of endings, context length, the
    context, then each ending's length and tokens. The header's longest example is words[1]."""
    header = struct.pack("<256i", 20240522, 1, 1, words[1], *[0] * 252)
    path.write_bytes(header + struct.pack(f"<{len(words)}H", *words))
    return path


def test_an_eval_file_of_one_example_reads(tmp_path):
    # as above: one example of 17 uint16 (34 bytes)
    path = one_example_file(tmp_path / "e.bin", [65535, 34, 0, 2, 4, 2, 11, 12, 1, 21, 2, 22, 23, 1, 24, 1, 25])
    [ex] = read_evalfile(path)
    assert (ex.index, ex.label, ex.context, ex.endings) == (0, 2, [11, 12], [[21], [22, 23], [24], [25]])


def test_an_eval_file_example_of_one_context_token_and_one_ending_of_one_token_reads(tmp_path):
    # the smallest example the format holds: 9 uint16 (18 bytes)
    [ex] = read_evalfile(one_example_file(tmp_path / "e.bin", [65535, 18, 0, 0, 1, 1, 11, 1, 21]))
    assert (ex.index, ex.label, ex.context, ex.endings) == (0, 0, [11], [[21]])


def test_eval_file_round_trips_the_sample(evalfile):
    enc = get_tokenizer()
    examples = read_evalfile(evalfile)
    assert [ex.index for ex in examples] == list(range(6)) and [ex.label for ex in examples] == LABELS
    first = json.loads(SAMPLE.read_text().splitlines()[0])
    assert examples[0].context == enc.encode_ordinary(first["ctx"])
    assert examples[0].endings[1] == enc.encode_ordinary(" " + first["endings"][1])
    for ex, favoured in zip(examples, FAVOURED):
        assert [BANANA in e for e in ex.endings] == [i == favoured for i in range(4)]


# --- scoring

def test_accuracy_on_the_sample_is_exactly_four_of_six(evalfile):
    assert evaluate(chooser(), read_evalfile(evalfile)) == (4, 6)


def test_the_choice_is_by_mean_loss_over_the_ending_not_total_loss(evalfile):
    # the favoured endings are the longest: by total loss a short ending would win every time
    examples = read_evalfile(evalfile)
    for ex, means in zip(examples, ending_losses(chooser(), examples)):
        totals = [m * len(e) for m, e in zip(means, ex.endings)]
        assert int(np.argmin(means)) == FAVOURED[ex.index]
        assert int(np.argmin(totals)) != FAVOURED[ex.index]


def test_ending_loss_is_the_mean_over_ending_tokens_only_with_the_context_masked():
    from llmpy.hellaswag import Example
    # the context is full of the favoured token: scored, it would lower every loss
    ex = Example(0, 0, [BANANA] * 5, [[BANANA, 318], [318, 318, 318], [BANANA], [318]])
    means = ending_losses(chooser(), [ex])[0]
    lse = log_sum_exp()
    assert means == pytest.approx([lse - SCORE / 2, lse, lse - SCORE, lse], abs=2e-5)


@pytest.mark.parametrize("B", [1, 3, 4, 8])
def test_any_micro_batch_gives_the_same_losses(evalfile, B):
    examples = read_evalfile(evalfile)
    reference = np.array(ending_losses(chooser(B=4), examples))
    np.testing.assert_allclose(np.array(ending_losses(chooser(B=B), examples)), reference, atol=1e-5)


def test_ties_go_to_the_first_ending():
    from llmpy.hellaswag import Example
    ex = Example(0, 0, [318], [[318], [318], [318], [318]])
    assert evaluate(chooser(), [ex]) == (1, 1)


def test_processes_split_the_examples_as_llm_c_and_their_counts_add_up(evalfile):
    assert [rank_slice(10, r, 4) for r in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    examples = read_evalfile(evalfile)
    parts = [evaluate(chooser(), examples, rank=r, world=4) for r in range(4)]
    assert tuple(map(sum, zip(*parts))) == (4, 6)


def test_examples_longer_than_T_are_refused_naming_the_flag(evalfile):
    with pytest.raises(LlmpyError, match="-t 8"):
        check_fits(read_evalfile(evalfile), 8, 50257)


def test_tokens_beyond_the_vocabulary_are_refused(evalfile):
    with pytest.raises(LlmpyError, match=r"example 0, context: token id 582 at position 1 is not in the "
                                         r"model's vocabulary of 97 \(ids 0-96\)"):
        check_fits(read_evalfile(evalfile), 64, 97)


def test_an_example_whose_longest_row_is_exactly_T_fits_and_one_token_more_does_not():
    from llmpy.hellaswag import Example
    # the rows are context + ending less the last token (it is only a target): 5 + 3 - 1 = 7
    ex = Example(0, 0, [1] * 5, [[1] * 3, [1]])
    check_fits([ex], 7, 50257)
    with pytest.raises(LlmpyError, match="example 0 needs sequences of 7 tokens, more than -t 6"):
        check_fits([ex], 6, 50257)


def test_a_token_id_equal_to_the_vocabulary_size_is_refused_and_one_below_passes():
    from llmpy.hellaswag import Example
    check_fits([Example(0, 0, [96], [[96]])], 8, 97)
    with pytest.raises(LlmpyError) as e:
        check_fits([Example(0, 0, [96], [[1], [96, 97]])], 8, 97)
    # without a path the message names the eval file generically
    assert str(e.value) == ("eval file: example 0, ending 1: token id 97 at position 1 is not in the "
                            "model's vocabulary of 97 (ids 0-96)")


def torch_ending_means(params, examples):
    """The reference: each ending's row (context + ending, less its last token) alone through
    the torch model in float64, its per-token cross-entropy -log softmax(logits)[target]
    averaged over the positions that predict the ending's tokens."""
    ref = TorchGPT2(TINY, params)
    means = []
    with torch.no_grad():
        for ex in examples:
            means.append([])
            for ending in ex.endings:
                tokens = ex.context + ending
                logits, _ = ref([tokens[:-1]])
                losses = -torch.log_softmax(logits[0], dim=-1)[torch.arange(len(tokens) - 1), tokens[1:]]
                means[-1].append(losses[len(ex.context) - 1:].mean().item())
    return means


def random_examples(rng, n, context_lengths, ending_lengths):
    token = lambda k: [int(t) for t in rng.integers(0, TINY.vocab_size, k)]
    return [Example(i, 0, token(rng.choice(context_lengths)), [token(rng.choice(ending_lengths)) for _ in range(4)])
            for i in range(n)]


def test_ending_losses_are_torchs_token_losses_averaged_over_each_ending(rng):
    # a random model reads every token (the chooser ignores them); rows of mixed lengths, three
    # to a forward, so that short rows share a batch with longer ones. fp32 against fp64: 1e-5
    params = random_params(TINY, seed=21)
    examples = random_examples(rng, 5, range(1, 9), range(1, 8))
    ours = ending_losses(GPT2(TINY, cpu, 3, TINY.max_seq_len, params=params), examples)
    np.testing.assert_allclose(ours, torch_ending_means(params, examples), rtol=0, atol=1e-5)


def test_an_example_whose_longest_row_is_exactly_T_is_scored(rng):
    params = random_params(TINY, seed=22)
    T = TINY.max_seq_len
    ex = Example(0, 0, [int(t) for t in rng.integers(0, TINY.vocab_size, 10)],
                 [[int(t) for t in rng.integers(0, TINY.vocab_size, k)] for k in (T + 1 - 10, 1, 3, 2)])
    ours = ending_losses(GPT2(TINY, cpu, 4, T, params=params), [ex])
    np.testing.assert_allclose(ours, torch_ending_means(params, [ex]), rtol=0, atol=1e-5)


def test_progress_is_called_before_each_forward_of_up_to_B_rows(evalfile):
    # the sample's 6 examples are 24 rows: 5 forwards of B = 5 rows, the last of 4
    model, calls = chooser(B=5), []
    forward = model.forward
    model.forward = lambda inputs, targets: (calls.append(("forward", len(inputs))), forward(inputs, targets))
    ending_losses(model, read_evalfile(evalfile), progress=lambda: calls.append("progress"))
    assert calls == ["progress", ("forward", 5)] * 4 + ["progress", ("forward", 4)]


def test_evaluate_passes_progress_on_to_each_forward(evalfile):
    calls = []
    evaluate(chooser(B=5), read_evalfile(evalfile), progress=lambda: calls.append("progress"))
    assert calls == ["progress"] * 5           # 24 rows, 5 forwards of up to B = 5 rows


def test_on_a_terminal_rank_0_draws_a_hellaswag_bar_of_its_batches(evalfile):
    with terminal() as screen:
        evaluate(chooser(B=5), read_evalfile(evalfile), rank=0, world=1)
    # tqdm's first frame, before any batch: 24 rows are 5 batches of B = 5
    assert screen.getvalue().split("\r")[1] == "HellaSwag:   0%|          | 0/5 [00:00<?, ?batch/s]"


def test_other_ranks_draw_no_bar(evalfile):
    with terminal() as screen:
        evaluate(chooser(), read_evalfile(evalfile), rank=1, world=2)
    assert screen.getvalue() == ""


def test_ending_losses_draws_no_bar_unless_asked(evalfile):
    with terminal() as screen:
        ending_losses(chooser(), read_evalfile(evalfile))
    assert screen.getvalue() == ""


# --- bad eval files: one line naming the file and the fault

def corrupt(evalfile, tmp_path, edit):
    data = bytearray(evalfile.read_bytes())
    edit(data)
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data))
    return path


def set_u16(offset, value):
    def edit(data):
        data[1024 + 2 * offset:1024 + 2 * offset + 2] = struct.pack("<H", value)
    return edit


@pytest.mark.parametrize("edit, fault", [
    (lambda d: d.__setitem__(slice(0, 4), struct.pack("<i", 7)), "bad magic 7"),
    (lambda d: d.__setitem__(slice(4, 8), struct.pack("<i", 2)), "unsupported version 2"),
    (lambda d: d.__delitem__(slice(len(d) - 10, len(d))), "example 5"),
    (lambda d: d.__delitem__(slice(100, len(d))), "shorter than"),
    (lambda d: d.extend(b"\0\0"), "2 bytes after the last of its 6 examples"),
    (set_u16(0, 1234), "example 0: no START_EXAMPLE marker 65535 at byte 1024"),
    (set_u16(2, 3), "index 3"),
    (set_u16(3, 4), "label 4"),
    (set_u16(5, 200), "do not add up"),
    (lambda d: d.__setitem__(slice(12, 16), struct.pack("<i", 9)), "longest example"),
    (lambda d: d.__setitem__(slice(8, 12), struct.pack("<i", 0)), "bad header or size: 0 examples, "),
    (lambda d: d.extend(b"\0"), "bad header or size: 6 examples, "),
    (lambda d: d.__setitem__(slice(8, 12), struct.pack("<i", 7)),
     "example 6: the file ends early (header says 7 examples; truncated?)"),
    (lambda d: (d.__setitem__(slice(8, 12), struct.pack("<i", 7)), d.extend(struct.pack("<2H", 65535, 20))),
     "example 6: length 20 bytes does not fit the file (truncated?)"),
])
def test_bad_eval_file_is_a_one_line_error(evalfile, tmp_path, edit, fault):
    path = corrupt(evalfile, tmp_path, edit)
    with pytest.raises(LlmpyError) as e:
        read_evalfile(path)
    assert fault in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_missing_start_marker_is_named_by_its_byte_in_the_file(evalfile, tmp_path):
    data = bytearray(evalfile.read_bytes())
    second = 1024 + struct.unpack_from("<H", data, 1026)[0]     # example 0's length word gives example 1's start
    data[second:second + 2] = struct.pack("<H", 1234)
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    with pytest.raises(LlmpyError, match=f"example 1: no START_EXAMPLE marker 65535 at byte {second}$"):
        read_evalfile(tmp_path / "bad.bin")


@pytest.mark.parametrize("example, fault", [
    # a length too short to hold the six words that describe the example
    ([65535, 10, 0, 0, 1, 1, 11, 1, 21], "length 10 bytes does not fit the file"),
    # two endings announced, one held
    ([65535, 18, 0, 0, 2, 1, 11, 1, 21], "its token counts do not add up to its length of 18 bytes"),
    # a word left over after the last ending
    ([65535, 20, 0, 0, 1, 1, 11, 1, 21, 99], "its token counts do not add up to its length of 20 bytes"),
    # no context token
    ([65535, 16, 0, 0, 1, 0, 1, 21], "its token counts do not add up to its length of 16 bytes"),
], ids=["length too short", "an ending missing", "a word left over", "no context"])
def test_an_example_whose_fields_disagree_with_its_length_is_a_one_line_error(tmp_path, example, fault):
    path = one_example_file(tmp_path / "e.bin", example)
    with pytest.raises(LlmpyError, match=re.escape(f"eval file {path}: example 0: {fault}")):
        read_evalfile(path)


# --- the jsonl: bad lines, and the download

@pytest.mark.parametrize("line, fault", [
    ("not json", "not a json object"),
    ('{"ctx": "a", "endings": ["a", "b", "c", "d"]}', "ctx, endings and label"),
    ('{"ctx": "a", "endings": ["a", "b", "c"], "label": 0}', "4 non-empty strings"),
    ('{"ctx": "a", "endings": ["a", "b", "c", "d"], "label": 4}', "label must be 0..3"),
    ('{"ctx": "", "endings": ["a", "b", "c", "d"], "label": 0}', "ctx must be"),
])
def test_bad_jsonl_line_is_an_error_naming_file_and_line(tmp_path, line, fault):
    path = tmp_path / "h.jsonl"
    path.write_text(SAMPLE.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(LlmpyError, match=fault) as e:
        read_jsonl(path)
    assert f"{path}:2" in str(e.value)


def test_offline_download_says_the_url_and_how_to_give_a_local_file(tmp_path):
    url = "http://127.0.0.1:9/hellaswag_val.jsonl"     # nothing listens on the discard port
    r = subprocess.run([sys.executable, str(ROOT / "dev/data/hellaswag.py"), "--url", url,
                        "--out", str(tmp_path / "h.bin")], capture_output=True, text=True, cwd=ROOT)
    err = r.stderr.strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert url in err and "--jsonl" in err
    assert list(tmp_path.iterdir()) == []          # no partial download left behind
