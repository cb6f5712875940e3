"""Hugging Face GPT-2 import and export (llmpy/hf.py, dev/eval/export_hf.py) against transformers,
on small random models built here: nothing is downloaded.

Tolerance: our model is fp32, transformers runs in float64: 1e-5 of the logits' scale, as in
tests/test_gpt2.py; a missing transpose or a wrong tensor gives errors of order 1.
"""
import json

import numpy as np
import pytest
import torch
import transformers

from dev.eval import export_hf as export_script
from llmpy import LlmpyError, cpu, hf
from llmpy.checkpoint import bf16_to_fp32, fp32_to_bf16, write_model
from llmpy.config import GPT2Config
from llmpy.gpt2 import GPT2
from llmpy.hf import export_hf, load_hf_gpt2, write_hf_tokenizer
from llmpy.testing.compare import assert_close
from tests.test_gpt2 import random_params

TINY = GPT2Config(max_seq_len=16, vocab_size=97, padded_vocab_size=128, num_layers=2, num_heads=4, channels=32)
TINY_HF = dict(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4, bos_token_id=None, eos_token_id=None)


def random_hf_model(seed=0, **overrides):
    """A transformers GPT2LMHeadModel of TINY's size with every tensor (biases and layernorms
    too) random, so that no mapping or transpose error can hide behind zeros or ones."""
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**TINY_HF, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def hf_logits(model, inputs):
    with torch.no_grad():
        return model.double()(torch.from_numpy(inputs).long()).logits.numpy()


def our_logits(cfg, params, inputs):
    model = GPT2(cfg, cpu, *inputs.shape, params=params)
    model.forward(inputs)
    return model.logits()


def tokens(cfg, B=2, seed=1):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, cfg.max_seq_len)).astype(np.int32)


@pytest.fixture
def tiny_gpt2_name(monkeypatch):
    """Make the name "gpt2" mean TINY's sizes, so that the named paths run on a tiny model."""
    monkeypatch.setitem(hf.HF_MODELS, "gpt2", dict(num_layers=2, channels=32, num_heads=4))
    monkeypatch.setattr(hf, "HF_MAX_SEQ_LEN", 16)
    monkeypatch.setattr(hf, "HF_VOCAB", 97)


def hub_snapshot(cache, repo="openai-community/gpt2", rev="0123abcd", main=True):
    base = cache / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / rev
    snapshot.mkdir(parents=True)
    if main:
        (base / "refs").mkdir()
        (base / "refs" / "main").write_text(rev)
    return snapshot


def save_like_openai(model, folder):
    """As OpenAI's model.safetensors on the Hub: names without "transformer.", the attention
    mask buffers h.<l>.attn.bias stored too, no lm_head."""
    from safetensors.numpy import save_file
    tensors = {k[len("transformer."):]: v.detach().float().numpy() for k, v in model.state_dict().items()
               if k.startswith("transformer.")}
    for l in range(model.config.n_layer):
        tensors[f"h.{l}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=np.float32))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(str(folder / "config.json"))


# --- import

def test_transformers_model_loads_into_our_layout_with_matching_logits(tmp_path):
    model = random_hf_model()
    model.save_pretrained(tmp_path)
    cfg, params = load_hf_gpt2(tmp_path)
    assert cfg == TINY
    inputs = tokens(cfg)
    assert_close(our_logits(cfg, params, inputs), hf_logits(model, inputs), 1e-5, "logits")


def test_imported_vocab_is_padded_with_zero_rows(tmp_path):
    random_hf_model().save_pretrained(tmp_path)
    cfg, params = load_hf_gpt2(tmp_path)
    wte = params[:cfg.padded_vocab_size * cfg.channels].reshape(cfg.padded_vocab_size, cfg.channels)
    assert np.all(wte[cfg.vocab_size:] == 0) and np.all(wte[:cfg.vocab_size] != 0)


def test_bf16_safetensors_load_exactly(tmp_path):
    model = random_hf_model().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    cfg, params = load_hf_gpt2(tmp_path)
    exact = model.float()
    assert_close(our_logits(cfg, params, tokens(cfg)), hf_logits(exact, tokens(cfg)), 1e-5, "logits")


def test_sharded_safetensors_load_through_their_index(tmp_path):
    model = random_hf_model()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    cfg, params = load_hf_gpt2(tmp_path)
    assert_close(our_logits(cfg, params, tokens(cfg)), hf_logits(model, tokens(cfg)), 1e-5, "logits")


def test_named_model_loads_from_the_hub_cache_refs_main_snapshot(tmp_path, monkeypatch, tiny_gpt2_name):
    model = random_hf_model()
    save_like_openai(model, hub_snapshot(tmp_path / "hub"))
    hub_snapshot(tmp_path / "hub", rev="stale", main=False)  # an older snapshot without weights
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    cfg, params = load_hf_gpt2("gpt2")
    assert_close(our_logits(cfg, params, tokens(cfg)), hf_logits(model, tokens(cfg)), 1e-5, "logits")


def test_named_model_loads_from_the_legacy_cache_name(tmp_path, monkeypatch, tiny_gpt2_name):
    model = random_hf_model()
    save_like_openai(model, hub_snapshot(tmp_path, repo="gpt2"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    cfg, params = load_hf_gpt2("gpt2")
    assert_close(our_logits(cfg, params, tokens(cfg)), hf_logits(model, tokens(cfg)), 1e-5, "logits")


def test_named_model_loads_from_a_given_folder(tmp_path, monkeypatch, tiny_gpt2_name):
    model = random_hf_model()
    save_like_openai(model, tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    cfg, params = load_hf_gpt2("gpt2", hf_dir=tmp_path)
    assert_close(our_logits(cfg, params, tokens(cfg)), hf_logits(model, tokens(cfg)), 1e-5, "logits")


def test_named_sizes_are_openais():
    assert {name: (s["num_layers"], s["channels"], s["num_heads"]) for name, s in hf.HF_MODELS.items()} == {
        "gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16), "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}
    assert (hf.HF_MAX_SEQ_LEN, hf.HF_VOCAB, hf.padded_vocab(hf.HF_VOCAB)) == (1024, 50257, 50304)


def test_hub_cache_dir_follows_huggingface_variables(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hf.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hf.hub_cache_dir() == tmp_path / "c"


# --- export

def test_export_loads_in_transformers_with_matching_logits(tmp_path):
    params = random_params(TINY, seed=3)
    export_hf(TINY, params, tmp_path)
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    inputs = tokens(TINY)
    assert_close(hf_logits(model, inputs), our_logits(TINY, params, inputs), 1e-5, "logits")


def test_export_then_import_gives_back_the_same_params(tmp_path):
    params = random_params(TINY, seed=4)
    export_hf(TINY, params, tmp_path)
    cfg, back = load_hf_gpt2(tmp_path)
    assert cfg == TINY and np.array_equal(back, params)


def test_exported_file_holds_every_tensor_as_the_safetensors_library_reads_it(tmp_path):
    params = random_params(TINY, seed=7)
    export_hf(TINY, params, tmp_path)
    from safetensors.numpy import load_file
    got, expected = load_file(str(tmp_path / "model.safetensors")), hf.hf_tensors(TINY, params)
    assert got.keys() == expected.keys()
    assert all(got[k].dtype == np.float32 and np.array_equal(got[k], expected[k]) for k in expected)


def test_export_writes_a_tied_fp32_gpt2_without_dropout(tmp_path):
    export_hf(TINY, random_params(TINY, seed=5), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["tie_word_embeddings"] is True
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"], config["vocab_size"]) == (2, 4, 32, 16, 97)
    assert config["resid_pdrop"] == config["embd_pdrop"] == config["attn_pdrop"] == 0.0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"} and "lm_head.weight" not in f.keys()
        assert f.get_tensor("transformer.wte.weight").shape == (97, 32)
        assert f.get_tensor("transformer.h.0.mlp.c_fc.weight").shape == (32, 128)  # Conv1D: (in, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no tokenizer for V=97


def test_export_script_converts_a_bf16_model_file(tmp_path, capsys):
    params = random_params(TINY, seed=6)
    write_model(tmp_path / "model.bin", TINY, params, dtype="bf16")
    export_script.main(["-i", str(tmp_path / "model.bin"), "-o", str(tmp_path / "hf")])
    assert "exported" in capsys.readouterr().out
    cfg, back = load_hf_gpt2(tmp_path / "hf")
    assert cfg == TINY and np.array_equal(back, bf16_to_fp32(fp32_to_bf16(params)))


def test_exported_tokenizer_encodes_like_ours(tmp_path):
    from llmpy.tokenizer import get_tokenizer
    enc = get_tokenizer()
    write_hf_tokenizer(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Hello world, this is GPT-2!\n\tWhether 'tis nobler — café 123  日本語 😀  \n\n"
    assert tok(text)["input_ids"] == enc.encode_ordinary(text)
    assert tok.decode(enc.encode_ordinary(text)) == text
    assert tok.eos_token_id == 50256 and len(tok) == 50257


# --- bad input: one line, naming what is wrong

def one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(LlmpyError, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_unknown_name_is_an_error():
    msg = one_line_error("neither a Hugging Face GPT-2 name", load_hf_gpt2, "gpt3")
    assert "gpt2, gpt2-medium, gpt2-large, gpt2-xl" in msg


def test_missing_snapshot_offline_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = one_line_error("no snapshot of openai-community/gpt2-medium", load_hf_gpt2, "gpt2-medium")
    assert str(tmp_path) in msg and "hf download openai-community/gpt2-medium" in msg
    assert "https://huggingface.co/openai-community/gpt2-medium" in msg and "--hf_dir" in msg


def test_missing_snapshot_is_downloaded_and_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    """No snapshot in the cache: the Hub is asked (here a closed local port, as a machine without
    internet sees it), and its failure ends in the same one line with the reason."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    msg = one_line_error("and the download failed", load_hf_gpt2, "gpt2")
    assert msg.startswith("gpt2: no snapshot of openai-community/gpt2") and "hf download" in msg


def test_missing_hf_dir_is_an_error(tmp_path):
    one_line_error("is not a directory", load_hf_gpt2, "gpt2", hf_dir=tmp_path / "nowhere")


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    msg = one_line_error("never unpickles", load_hf_gpt2, tmp_path)
    assert "pytorch_model.bin" in msg and "model.safetensors" in msg


def test_wrong_tensor_shape_names_the_tensor(tmp_path):
    random_hf_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_embd"], config["n_head"] = 64, 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    one_line_error(r"transformer.wte.weight has shape \(97, 32\), config.json's sizes need \(97, 64\)", load_hf_gpt2, tmp_path)


def test_missing_tensor_names_it(tmp_path):
    random_hf_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layer"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    one_line_error("no tensor transformer.h.2.ln_1.weight", load_hf_gpt2, tmp_path)


def test_truncated_safetensors_is_an_error(tmp_path):
    random_hf_model().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    one_line_error("truncated or corrupt", load_hf_gpt2, tmp_path)


def test_non_safetensors_file_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF))
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    one_line_error("not a safetensors file", load_hf_gpt2, tmp_path)


def test_other_architecture_in_config_is_refused(tmp_path):
    random_hf_model(activation_function="relu").save_pretrained(tmp_path)
    one_line_error("activation_function='relu' is not GPT-2 as llmpy computes it", load_hf_gpt2, tmp_path)


def test_untied_lm_head_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file
    random_hf_model().save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    one_line_error("lm_head.weight differs from wte", load_hf_gpt2, tmp_path)


def test_named_model_of_another_size_is_refused(tmp_path, tiny_gpt2_name):
    random_hf_model(n_layer=3).save_pretrained(tmp_path)
    one_line_error(r"not gpt2: num_layers 3 \(expected 2\)", load_hf_gpt2, "gpt2", hf_dir=tmp_path)


def test_export_script_on_a_missing_file_is_a_one_line_error(tmp_path, monkeypatch):
    one_line_error("cannot read", export_script.main, ["-i", str(tmp_path / "none.bin"), "-o", str(tmp_path / "hf")])
