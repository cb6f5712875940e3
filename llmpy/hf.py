"""Hugging Face GPT-2 <-> llmpy: OpenAI's GPT-2 weights from a local Hugging Face snapshot, and
our models as a `transformers` GPT2LMHeadModel folder (config.json + model.safetensors).

Hugging Face's GPT-2 tensors (GPT2LMHeadModel.save_pretrained names them "transformer.<name>",
OpenAI's snapshots on the Hub plain "<name>"):
    wte.weight (V, C)   wpe.weight (maxT, C)   ln_f.weight, ln_f.bias (C)
    h.<l>.ln_1.weight/bias (C)   h.<l>.attn.c_attn.weight (C, 3C) /bias   h.<l>.attn.c_proj.weight (C, C) /bias
    h.<l>.ln_2.weight/bias (C)   h.<l>.mlp.c_fc.weight (C, 4C) /bias      h.<l>.mlp.c_proj.weight (4C, C) /bias
GPT-2's Conv1D stores a matrix as (in, out); llm.c as (out, in): every matrix is transposed.
Hugging Face has V = 50257 rows of wte; ours are padded to Vp (a multiple of 128) with zero rows.
The LM head is tied to wte on both sides (an lm_head.weight, if a file has one, must equal wte).

Only safetensors are read. A pytorch_model.bin is a pickle, and llmpy never unpickles a file.
The safetensors package (no torch) reads float32/float16 tensors; bfloat16 ones, which NumPy
cannot hold, are read as raw uint16 at the offsets in the file's header and widened exactly.
"""
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from llmpy import LlmpyError
from llmpy.checkpoint import bf16_to_fp32, write_atomic
from llmpy.config import GPT2Config, num_parameters, param_shapes
from llmpy.progress import counter

# OpenAI's GPT-2 sizes, under the Hub's current repo ids (the unprefixed ids are the old names
# of the same repos; a cache filled before the move to openai-community has those)
HF_MODELS = {
    "gpt2": dict(num_layers=12, channels=768, num_heads=12),          # 124M
    "gpt2-medium": dict(num_layers=24, channels=1024, num_heads=16),  # 350M
    "gpt2-large": dict(num_layers=36, channels=1280, num_heads=20),   # 774M
    "gpt2-xl": dict(num_layers=48, channels=1600, num_heads=25),      # 1558M
}
HF_MAX_SEQ_LEN, HF_VOCAB = 1024, 50257
VOCAB_PAD = 128  # llm.c pads V to a multiple of 128: 50257 -> 50304
EOT = 50256

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# ours -> (Hugging Face name, transposed?); "{l}" is the layer
GLOBAL_TENSORS = {"wte": "wte.weight", "wpe": "wpe.weight", "lnfw": "ln_f.weight", "lnfb": "ln_f.bias"}
LAYER_TENSORS = {
    "ln1w": ("ln_1.weight", False), "ln1b": ("ln_1.bias", False),
    "qkvw": ("attn.c_attn.weight", True), "qkvb": ("attn.c_attn.bias", False),
    "attprojw": ("attn.c_proj.weight", True), "attprojb": ("attn.c_proj.bias", False),
    "ln2w": ("ln_2.weight", False), "ln2b": ("ln_2.bias", False),
    "fcw": ("mlp.c_fc.weight", True), "fcb": ("mlp.c_fc.bias", False),
    "fcprojw": ("mlp.c_proj.weight", True), "fcprojb": ("mlp.c_proj.bias", False),
}


def padded_vocab(V):
    return -(-V // VOCAB_PAD) * VOCAB_PAD


def repo_id(name):
    return f"openai-community/{name}"


def download_hint(name):
    return (f"get it with `hf download {repo_id(name)} config.json {SAFETENSORS}` (huggingface_hub's CLI; "
            f"files at https://huggingface.co/{repo_id(name)}) on a machine with internet, then copy the "
            f"Hugging Face cache or pass the folder with --hf_dir")


# -----------------------------------------------------------------------------
# finding a snapshot

def hub_cache_dir():
    """Hugging Face's hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
    ($XDG_CACHE_HOME in place of ~/.cache where set), as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def find_snapshot(name, cache=None):
    """The snapshot folder of OpenAI's `name` in the hub cache that holds model weights in
    safetensors: refs/main's revision first, else the newest one. None if there is none."""
    cache = Path(cache) if cache is not None else hub_cache_dir()
    for repo in (repo_id(name), name):
        base = cache / f"models--{repo.replace('/', '--')}"
        snapshots = base / "snapshots"
        if not snapshots.is_dir():
            continue
        candidates = sorted((d for d in snapshots.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
        ref = base / "refs" / "main"
        if ref.is_file():
            main = snapshots / ref.read_text().strip()
            candidates = [main] + [d for d in candidates if d != main]
        for d in candidates:
            if _has_safetensors(d):
                return d
    return None


def download_snapshot(name):
    """OpenAI's `name` fetched from the Hugging Face Hub into its cache (config.json and the
    safetensors only, with huggingface_hub's progress bars), as from_pretrained would; offline
    (no network, HF_HUB_OFFLINE=1, no huggingface_hub) a one-line error saying where to get it."""
    missing = (f"{name}: no snapshot of {repo_id(name)} with {SAFETENSORS} in the Hugging Face cache "
               f"{hub_cache_dir()} (set by HF_HUB_CACHE or HF_HOME)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise LlmpyError(f"{missing} (HF_HUB_OFFLINE is set); {download_hint(name)}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LlmpyError(f"{missing}; {download_hint(name)}") from None
    print(f"{name}: downloading {repo_id(name)} from the Hugging Face Hub into {hub_cache_dir()}")
    try:
        folder = Path(snapshot_download(repo_id(name), allow_patterns=["config.json", SAFETENSORS],
                                        cache_dir=hub_cache_dir(), endpoint=os.environ.get("HF_ENDPOINT")))
    except Exception as e:      # noqa: BLE001 -- offline, refused, interrupted: all mean "not here"
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise LlmpyError(f"{missing}, and the download failed ({why}); {download_hint(name)}") from None
    if not _has_safetensors(folder):
        raise LlmpyError(f"{missing}: {repo_id(name)} has no {SAFETENSORS}; {download_hint(name)}")
    return folder


def _has_safetensors(d):
    return (d / SAFETENSORS).is_file() or (d / SAFETENSORS_INDEX).is_file()


# -----------------------------------------------------------------------------
# import

def load_hf_gpt2(name_or_dir, hf_dir=None):
    """OpenAI's GPT-2 (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`) from the Hugging Face cache,
    or from `hf_dir` where given, or any Hugging Face GPT-2 folder (config.json + model.safetensors)
    given as `name_or_dir`. Returns (GPT2Config, flat fp32 params in llm.c's layout)."""
    name = str(name_or_dir)
    expected = HF_MODELS.get(name)
    if hf_dir is not None:
        if expected is None:
            raise LlmpyError(f"--hf_dir needs one of {', '.join(HF_MODELS)} as the model name, not {name!r}")
        folder = Path(hf_dir)
        if not folder.is_dir():
            raise LlmpyError(f"{name}: --hf_dir {folder} is not a directory; {download_hint(name)}")
    elif expected is not None:
        folder = find_snapshot(name) or download_snapshot(name)
    elif Path(name).is_dir():
        folder = Path(name)
    else:
        raise LlmpyError(f"{name!r} is neither a Hugging Face GPT-2 name ({', '.join(HF_MODELS)}) nor a directory")
    cfg = _read_config(folder, name, expected)
    return cfg, _read_params(folder, cfg)


def _read_config(folder, name, expected):
    path = folder / "config.json"
    if not path.is_file():
        if expected is None:
            raise LlmpyError(f"{path}: missing; a Hugging Face GPT-2 folder needs config.json next to {SAFETENSORS}")
        return GPT2Config(max_seq_len=HF_MAX_SEQ_LEN, vocab_size=HF_VOCAB, padded_vocab_size=padded_vocab(HF_VOCAB), **expected)
    try:
        hf = json.loads(path.read_text())
        if not isinstance(hf, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LlmpyError(f"{path}: unreadable: {e}") from None
    if hf.get("model_type", "gpt2") != "gpt2":
        raise LlmpyError(f"{path}: model_type {hf['model_type']!r}, only GPT-2 ('gpt2') converts to llmpy")
    # the architecture llmpy implements: anything else would load but compute something else
    C = hf.get("n_embd", 768)
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "n_inner": (hf.get("n_inner"), (None, 4 * C)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),
        "add_cross_attention": (hf.get("add_cross_attention", False), (False,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise LlmpyError(f"{path}: {key}={value!r} is not GPT-2 as llmpy computes it (supported: "
                             f"{', '.join(map(repr, allowed))})")
    try:
        sizes = dict(max_seq_len=int(hf.get("n_positions", HF_MAX_SEQ_LEN)), vocab_size=int(hf.get("vocab_size", HF_VOCAB)),
                     num_layers=int(hf.get("n_layer", 12)), num_heads=int(hf.get("n_head", 12)), channels=int(C))
    except (TypeError, ValueError) as e:
        raise LlmpyError(f"{path}: bad size: {e}") from None
    if min(sizes.values()) <= 0:
        raise LlmpyError(f"{path}: sizes must be positive: {sizes}")
    cfg = GPT2Config(padded_vocab_size=padded_vocab(sizes["vocab_size"]), **sizes)
    if expected is not None:
        want = dict(max_seq_len=HF_MAX_SEQ_LEN, vocab_size=HF_VOCAB, **expected)
        if sizes != want:
            diff = ", ".join(f"{k} {sizes[k]} (expected {want[k]})" for k in want if sizes[k] != want[k])
            raise LlmpyError(f"{path}: not {name}: {diff}")
    return cfg


class _TensorFiles:
    """The tensors of a folder's model.safetensors, or of the shards model.safetensors.index.json
    lists: {name: (file, dtype, shape, byte range)} from each file's header, read without loading."""

    def __init__(self, folder):
        if (folder / SAFETENSORS).is_file():
            files = [folder / SAFETENSORS]
        elif (folder / SAFETENSORS_INDEX).is_file():
            index = folder / SAFETENSORS_INDEX
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                files = [folder / f for f in sorted(set(weight_map.values()))]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise LlmpyError(f"{index}: unreadable index ({type(e).__name__}: {e})") from None
        else:
            pickles = [p for p in PICKLES if (folder / p).is_file()]
            if pickles:
                raise LlmpyError(f"{folder}: has {pickles[0]} but no {SAFETENSORS}; llmpy never unpickles a "
                                 f"file: download {SAFETENSORS} of the same repo, or convert it where you trust it "
                                 f"(transformers: model.save_pretrained(dir) writes safetensors)")
            raise LlmpyError(f"{folder}: no {SAFETENSORS} (nor {SAFETENSORS_INDEX})")
        self.tensors = {}
        for f in files:
            header, data_start = read_safetensors_header(f)
            for key, info in header.items():
                if key != "__metadata__":
                    self.tensors[key] = (f, data_start, info)

    def get(self, key):
        """The tensor as fp32 (float32, float16 or bfloat16 in the file)."""
        path, data_start, info = self.tensors[key]
        dtype, shape = info["dtype"], tuple(info["shape"])
        if dtype == "BF16":
            begin, end = info["data_offsets"]
            raw = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=data_start + begin)
            return bf16_to_fp32(raw).reshape(shape)
        from safetensors import SafetensorError, safe_open  # only here: training never needs it
        try:
            with safe_open(str(path), framework="np") as f:
                return np.asarray(f.get_tensor(key), dtype=np.float32)
        except SafetensorError as e:
            raise LlmpyError(f"{path}: tensor {key}: {e}") from None


def read_safetensors_header(path):
    """A safetensors file's JSON header, checked against the file size: ({name: {dtype, shape,
    data_offsets}}, offset of the data). Format: u64 header length, JSON header, raw data."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= n <= min(size - 8, 100 << 20):
                raise LlmpyError(f"{path}: not a safetensors file (header length {n}, file size {size})")
            header = json.loads(f.read(n))
    except OSError as e:
        raise LlmpyError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LlmpyError(f"{path}: not a safetensors file (bad JSON header: {e})") from None
    if not isinstance(header, dict):
        raise LlmpyError(f"{path}: not a safetensors file (header is not a JSON object)")
    itemsize = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (TypeError, KeyError, ValueError) as e:
            raise LlmpyError(f"{path}: tensor {key}: bad header entry ({type(e).__name__}: {e})") from None
        if (dtype in itemsize and end - begin != math.prod(shape) * itemsize[dtype]) or not 0 <= begin <= end <= size - 8 - n:
            raise LlmpyError(f"{path}: tensor {key}: bytes {begin}..{end} do not fit its {dtype} {shape} in a "
                             f"{size}-byte file; truncated or corrupt")
    return header, 8 + n


def _read_params(folder, cfg):
    files = _TensorFiles(folder)
    tensors = files.tensors
    prefix = "transformer." if "transformer.wte.weight" in tensors else ""
    V, C = cfg.vocab_size, cfg.channels

    def fetch(hf_name, shape):
        key = prefix + hf_name
        if key not in tensors:
            raise LlmpyError(f"{folder}: no tensor {key} (a GPT-2 with {cfg.num_layers} layers needs it)")
        path, _, info = tensors[key]
        if tuple(info["shape"]) != shape:
            raise LlmpyError(f"{path}: tensor {key} has shape {tuple(info['shape'])}, config.json's sizes need {shape}")
        if info["dtype"] not in ("F32", "F16", "BF16"):
            raise LlmpyError(f"{path}: tensor {key} is {info['dtype']}, expected F32, F16 or BF16")
        return files.get(key)

    params = np.zeros(num_parameters(cfg), dtype=np.float32)
    offset = 0
    for ours, shape in param_shapes(cfg).items():
        view = params[offset:offset + math.prod(shape)].reshape(shape)
        offset += view.size
        if ours == "wte":
            view[:V] = fetch("wte.weight", (V, C))  # the padded rows stay zero
        elif ours in GLOBAL_TENSORS:
            view[...] = fetch(GLOBAL_TENSORS[ours], shape)
        else:
            hf_name, transposed = LAYER_TENSORS[ours]
            for l in range(cfg.num_layers):
                hf_shape = shape[1:][::-1] if transposed else shape[1:]
                t = fetch(f"h.{l}.{hf_name}", hf_shape)
                view[l] = t.T if transposed else t
    wte = params[:V * C].reshape(V, C)
    for key in ("lm_head.weight", "transformer.lm_head.weight"):
        if key in tensors and (tuple(tensors[key][2]["shape"]) != (V, C) or not np.array_equal(files.get(key), wte)):
            raise LlmpyError(f"{tensors[key][0]}: {key} differs from wte: llmpy's GPT-2 ties its LM head to wte")
    return params


# -----------------------------------------------------------------------------
# export

def hf_config(cfg, dtype="float32"):
    """config.json of a transformers GPT2LMHeadModel with cfg's sizes (no dropout: llm.c trains without)."""
    eot = EOT if cfg.vocab_size > EOT else None
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.max_seq_len, "n_ctx": cfg.max_seq_len,
        "n_embd": cfg.channels, "n_layer": cfg.num_layers, "n_head": cfg.num_heads, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": eot, "eos_token_id": eot,
        "torch_dtype": dtype, "dtype": dtype,
    }


def hf_tensors(cfg, params):
    """{Hugging Face name: fp32 array} of GPT2LMHeadModel for llmpy's flat params (wte without
    its padded rows, matrices as Conv1D's (in, out); no lm_head: tied)."""
    n = num_parameters(cfg)
    if params.size != n:
        raise LlmpyError(f"params has {params.size} elements, the config needs {n}")
    flat = np.asarray(params, dtype=np.float32).ravel()
    out, offset = {}, 0
    for ours, shape in param_shapes(cfg).items():
        view = flat[offset:offset + math.prod(shape)].reshape(shape)
        offset += view.size
        if ours == "wte":
            out["transformer.wte.weight"] = np.ascontiguousarray(view[:cfg.vocab_size])
        elif ours in GLOBAL_TENSORS:
            out["transformer." + GLOBAL_TENSORS[ours]] = np.ascontiguousarray(view)
        else:
            hf_name, transposed = LAYER_TENSORS[ours]
            for l in range(cfg.num_layers):
                out[f"transformer.h.{l}.{hf_name}"] = np.ascontiguousarray(view[l].T if transposed else view[l])
    return out


def export_hf(cfg, params, out_dir, tokenizer=True):
    """Write cfg and flat params as a transformers GPT2LMHeadModel folder: config.json and
    model.safetensors (fp32), and for GPT-2's vocabulary (V = 50257) with `tokenizer` also GPT-2's
    tokenizer files. Files go through a temporary name, as model files do."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / SAFETENSORS, hf_tensors(cfg, params), metadata={"format": "pt"})  # transformers wants "pt"
    _write_text(out / "config.json", json.dumps(hf_config(cfg), indent=2) + "\n")
    if tokenizer and cfg.vocab_size == HF_VOCAB:
        write_hf_tokenizer(out)
    return out


def write_safetensors(path, tensors, metadata):
    """{name: fp32 array} as a safetensors file: u64 length of the JSON header (padded with spaces
    to a multiple of 8 bytes), the header ({name: dtype, shape, data_offsets}, "__metadata__"),
    then each tensor's bytes in the header's order, back to back. Written tensor by tensor behind
    a progress bar (a 1.5B model is 6 GB), through a temporary name as model files are."""
    header, offset = {"__metadata__": metadata}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    bar = counter(total=offset, desc=f"writing {path.name}", unit="B")

    def parts():
        yield struct.pack("<Q", len(text)) + text
        for a in tensors.values():
            yield np.ascontiguousarray(a, dtype="<f4").data
            bar.update(a.nbytes)
    try:
        write_atomic(path, parts())
    finally:
        bar.close()


def _write_text(path, text):
    write_atomic(path, [text.encode("utf-8")])


# -----------------------------------------------------------------------------
# GPT-2's tokenizer as Hugging Face files, from llmpy's BPE ranks (no download)

def bytes_to_unicode():
    """GPT-2's byte -> printable character map, in which vocab.json and merges.txt spell tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:  # the other 68 bytes map to chr(256), chr(257), ...
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _merge_pair(ranks, token, rank):
    """The two tokens that BPE merged into `token`: BPE on its bytes with only the merges
    ranked before it leaves exactly two parts."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def write_hf_tokenizer(out_dir, enc=None):
    """vocab.json, merges.txt and tokenizer_config.json of GPT-2's tokenizer (transformers'
    GPT2Tokenizer), recovered from the BPE ranks: token i's bytes have rank i, and the merges are
    the tokens from 256 on, each as the pair it is merged from."""
    if enc is None:
        from llmpy.tokenizer import get_tokenizer
        enc = get_tokenizer()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = {enc.decode_single_token_bytes(i): i for i in range(EOT)}
    spell = bytes_to_unicode()

    def word(b):
        return "".join(spell[x] for x in b)
    vocab = {word(b): i for b, i in ranks.items()}
    vocab["<|endoftext|>"] = EOT
    merges = ["#version: 0.2"]
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if rank >= 256:
            pair = _merge_pair(ranks, token, rank)
            if len(pair) != 2:
                raise LlmpyError(f"BPE rank {rank} ({token!r}) is not the merge of two earlier tokens")
            merges.append(f"{word(pair[0])} {word(pair[1])}")
    _write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_text(out / "merges.txt", "\n".join(merges) + "\n")
    _write_text(out / "tokenizer_config.json", json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": HF_MAX_SEQ_LEN, "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }, indent=2) + "\n")
