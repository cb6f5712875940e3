"""Checkpoints: llm.c model files (fp32 and bf16), resume state, and the checkpoint folder."""
import errno
import io
import os
import struct
import warnings

import numpy as np
import pytest
import torch

from llmpy import LlmpyError, checkpoint
from llmpy.checkpoint import (bf16_to_fp32, checkpoint_paths, checkpoints_to_delete, complete_checkpoint_steps,
                              delete_checkpoint, fp32_to_bf16, latest_checkpoint_step, read_model,
                              read_model_config, read_state,
                              remove_stale_temps, write_done_marker, write_model, write_state)
from llmpy.config import GPT2Config, num_parameters
from llmpy.llmc_file import MODEL, read_header

CFG = GPT2Config(max_seq_len=16, vocab_size=100, padded_vocab_size=128, num_layers=2, num_heads=2, channels=16)
# llm.c's parameter shapes for CFG, written out here rather than taken from config.param_shapes
LLMC_SHAPES = [(128, 16), (16, 16), (2, 16), (2, 16), (2, 48, 16), (2, 48), (2, 16, 16), (2, 16),
               (2, 16), (2, 16), (2, 64, 16), (2, 64), (2, 16, 64), (2, 16), (16,), (16,)]


def random_params(seed=0):
    return np.random.default_rng(seed).standard_normal(num_parameters(CFG)).astype(np.float32)


def torch_bf16_bits(x):
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def assert_one_line_naming(error, path):
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


# -----------------------------------------------------------------------------
# bf16

def test_fp32_to_bf16_matches_torch_rounding():
    rng = np.random.default_rng(1)
    normal = rng.standard_normal(10_000).astype(np.float32)
    magnitudes = (rng.standard_normal(10_000) * 10.0 ** rng.uniform(-44, 37, 10_000)).astype(np.float32)
    # fp32s exactly halfway between two bf16s, with even and odd kept bits, and their neighbours
    top = (rng.integers(0, 0x7F7F, 10_000, dtype=np.uint32) | rng.integers(0, 2, 10_000, dtype=np.uint32) << 15) << 16
    halfway = np.concatenate([top | 0x8000, top | 0x7FFF, top | 0x8001]).view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8,
                         np.finfo(np.float32).max, -np.finfo(np.float32).max], dtype=np.float32)
    x = np.concatenate([normal, -np.abs(normal), magnitudes, halfway, specials])
    np.testing.assert_array_equal(fp32_to_bf16(x), torch_bf16_bits(x))


def test_fp32_to_bf16_keeps_nan_a_nan():
    # payloads where rounding would carry into the exponent (inf) or wrap past 0xFFFF
    bits = np.array([0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0xFF800001, 0xFFFFFFFF, 0x7F80FFFF], dtype=np.uint32)
    assert np.isnan(bf16_to_fp32(fp32_to_bf16(bits.view(np.float32)))).all()



def test_fp32_to_bf16_returns_uint16_bits_and_takes_float64_as_its_fp32_values():
    x32 = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    bits = fp32_to_bf16(x32.astype(np.float64))
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(bits, torch_bf16_bits(x32))

def test_bf16_to_fp32_matches_torch_for_every_bf16():
    bits = np.arange(1 << 16, dtype=np.uint16)
    reference = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(bf16_to_fp32(bits).view(np.uint32), reference.view(np.uint32))


# -----------------------------------------------------------------------------
# model files

def test_fp32_model_round_trips_exactly(tmp_path):
    params = random_params()
    write_model(tmp_path / "m.bin", CFG, params, dtype="fp32")
    cfg, loaded = read_model(tmp_path / "m.bin")
    assert cfg == CFG
    np.testing.assert_array_equal(loaded, params)


def test_bf16_model_round_trips_to_rounded_params(tmp_path):
    params = random_params()
    write_model(tmp_path / "m.bin", CFG, params, dtype="bf16")
    cfg, loaded = read_model(tmp_path / "m.bin")
    assert cfg == CFG
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, torch.from_numpy(params).to(torch.bfloat16).float().numpy())
    assert os.path.getsize(tmp_path / "m.bin") == 1024 + 2 * num_parameters(CFG)


@pytest.mark.parametrize("dtype, version", [("fp32", 3), ("bf16", 5)])
def test_model_header_is_llmc(tmp_path, dtype, version):
    write_model(tmp_path / "m.bin", CFG, random_params(), dtype=dtype)
    header = np.fromfile(tmp_path / "m.bin", dtype="<i4", count=256)
    np.testing.assert_array_equal(header[:8], [20240326, version, 16, 100, 2, 2, 16, 128])
    assert not header[8:].any()


@pytest.mark.parametrize("version", [3, 5])
def test_model_written_independently_loads(tmp_path, version):
    rng = np.random.default_rng(2)
    tensors = [rng.standard_normal(shape).astype(np.float32) for shape in LLMC_SHAPES]
    if version == 5:
        tensors = [(t.view(np.uint32) & 0xFFFF0000).view(np.float32) for t in tensors]  # exact in bf16
    with open(tmp_path / "m.bin", "wb") as f:
        f.write(struct.pack("<256i", 20240326, version, 16, 100, 2, 2, 16, 128, *[0] * 248))
        for t in tensors:
            f.write((t.astype("<f4") if version == 3 else (t.view("<u4") >> 16).astype("<u2")).tobytes())
    cfg, params = read_model(tmp_path / "m.bin")
    assert cfg == CFG
    np.testing.assert_array_equal(params, np.concatenate([t.ravel() for t in tensors]))


def test_fp32_model_file_holds_fp32_whatever_the_params_dtype(tmp_path):
    params = random_params().astype(np.float64) / 3            # float64 values, not all exact in fp32
    write_model(tmp_path / "m.bin", CFG, params)
    np.testing.assert_array_equal(read_model(tmp_path / "m.bin")[1], params.astype(np.float32))


def test_write_model_refuses_a_dtype_other_than_fp32_or_bf16_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"^dtype must be one of fp32, bf16, not 'fp16'$"):
        write_model(tmp_path / "m.bin", CFG, random_params(), dtype="fp16")
    assert os.listdir(tmp_path) == []


def test_write_model_refuses_params_of_another_size_and_writes_nothing(tmp_path):
    n = num_parameters(CFG)
    with pytest.raises(ValueError, match=rf"^params has {n - 1} elements, the config needs {n}$"):
        write_model(tmp_path / "m.bin", CFG, random_params()[1:])
    assert os.listdir(tmp_path) == []


def test_model_config_is_read_from_an_llm_c_header_alone(tmp_path):
    # llm.c's header for CFG, and no parameters after it: only the header is read
    (tmp_path / "m.bin").write_bytes(struct.pack("<256i", 20240326, 3, 16, 100, 2, 2, 16, 128, *[0] * 248))
    assert read_model_config(tmp_path / "m.bin") == CFG

@pytest.mark.parametrize("cfg", [
    GPT2Config(max_seq_len=16, vocab_size=100, padded_vocab_size=128, num_layers=1, num_heads=1, channels=16),
    GPT2Config(max_seq_len=16, vocab_size=128, padded_vocab_size=128, num_layers=2, num_heads=2, channels=16),
], ids=["one-layer-one-head", "unpadded-vocab"])
def test_smallest_legal_sizes_are_read(tmp_path, cfg):
    params = np.random.default_rng(3).standard_normal(num_parameters(cfg)).astype(np.float32)
    write_model(tmp_path / "m.bin", cfg, params)
    assert read_model(tmp_path / "m.bin")[0] == cfg

def set_header(path, index, value):
    with open(path, "r+b") as f:
        f.seek(4 * index)
        f.write(struct.pack("<i", value))


def truncate(path, nbytes):
    with open(path, "r+b") as f:
        f.truncate(nbytes)


def append(path, data):
    with open(path, "ab") as f:
        f.write(data)


@pytest.mark.parametrize("corrupt, expected", [
    (os.remove, "No such file"),
    (lambda p: truncate(p, 100), "shorter than the 1024-byte header"),
    (lambda p: set_header(p, 0, 20240520), "not an llm.c model file"),
    (lambda p: set_header(p, 1, 4), "supported: 3 = fp32, 5 = bf16"),
    (lambda p: truncate(p, os.path.getsize(p) - 10), f"needs {1024 + 4 * num_parameters(CFG)} bytes"),
    (lambda p: append(p, b"\0"), f"file is {1025 + 4 * num_parameters(CFG)} bytes"),
    (lambda p: set_header(p, 6, 0), "sizes must be positive"),
    (lambda p: set_header(p, 4, -2), "sizes must be positive"),
    (lambda p: set_header(p, 7, 0), "sizes must be positive"),  # pre-padding llm.c files
    (lambda p: set_header(p, 7, 64), "Vp=64 is smaller than V=100"),
    (lambda p: set_header(p, 5, 3), "C=16 is not divisible by NH=3"),
], ids=["missing", "short-header", "bad-magic", "bad-version", "truncated-body", "trailing-bytes",
        "zero-channels", "negative-layers", "no-padded-vocab", "Vp-below-V", "C-not-divisible-by-NH"])
def test_bad_model_file_raises_one_line_error_naming_it(tmp_path, corrupt, expected):
    path = tmp_path / "m.bin"
    write_model(path, CFG, random_params())
    corrupt(path)
    with pytest.raises(LlmpyError, match=expected) as error:
        read_model(path)
    assert_one_line_naming(error, path)


def test_a_nan_in_a_model_file_is_named_by_its_llm_c_tensor_and_element(tmp_path):
    params = random_params()
    ln1b_start = sum(int(np.prod(shape)) for shape in LLMC_SHAPES[:3])      # after wte, wpe, ln1w
    params[ln1b_start + 5] = np.nan
    write_model(tmp_path / "m.bin", CFG, params)
    with pytest.raises(LlmpyError) as error:
        read_model(tmp_path / "m.bin")
    assert str(error.value).startswith(f"{tmp_path / 'm.bin'}: ln1b holds nan at element 5: NaN and inf")

def test_finite_weights_whose_sum_overflows_fp32_are_read(tmp_path):
    params = np.zeros(num_parameters(CFG), dtype=np.float32)
    params[:4] = 3e38                                   # each finite; their sum is not, in fp32
    write_model(tmp_path / "m.bin", CFG, params)
    np.testing.assert_array_equal(read_model(tmp_path / "m.bin")[1], params)


def test_inf_and_minus_inf_in_a_model_file_are_one_error_and_no_warning(tmp_path):
    params = random_params()
    params[10], params[20] = np.inf, -np.inf
    write_model(tmp_path / "m.bin", CFG, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # inf + -inf would warn "invalid value"
        with pytest.raises(LlmpyError, match=": wte holds inf at element 10: NaN and inf"):
            read_model(tmp_path / "m.bin")

def test_a_truncated_bf16_model_file_says_what_its_header_describes(tmp_path):
    write_model(tmp_path / "m.bin", CFG, random_params(), dtype="bf16")
    truncate(tmp_path / "m.bin", 2000)
    n = sum(int(np.prod(shape)) for shape in LLMC_SHAPES)
    with pytest.raises(LlmpyError, match=rf"file is 2000 bytes but its header says version 5, maxT=16 V=100 L=2 "
                                         rf"NH=2 C=16 Vp=128: {n} params, which needs {1024 + 2 * n} bytes"):
        read_model(tmp_path / "m.bin")

@pytest.mark.parametrize("index, sizes", [
    (2, "maxT=0 V=100 L=2 NH=2 C=16 Vp=128"),
    (3, "maxT=16 V=0 L=2 NH=2 C=16 Vp=128"),
    (5, "maxT=16 V=100 L=2 NH=0 C=16 Vp=128"),
], ids=["maxT", "V", "NH"])
def test_a_zero_size_in_a_model_header_is_refused_with_the_header_s_sizes(tmp_path, index, sizes):
    write_model(tmp_path / "m.bin", CFG, random_params())
    set_header(tmp_path / "m.bin", index, 0)
    with pytest.raises(LlmpyError) as error:
        read_model(tmp_path / "m.bin")
    assert str(error.value) == f"{tmp_path / 'm.bin'}: bad header: sizes must be positive ({sizes})"

class FullDiskFile(io.FileIO):
    """Stands in for open(): takes the first write, then fails the way a full disk does."""
    writes = 0

    def write(self, data):
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def write_some_state(path, seed):
    m, v = random_params(seed), random_params(seed + 1)
    write_state(path, step=seed, m=m, v=v, master=None, rng_state={}, loader_state={}, extra={})


@pytest.mark.parametrize("write, read", [
    (lambda path, seed: write_model(path, CFG, random_params(seed)), lambda path: read_model(path)[1]),
    (write_some_state, lambda path: read_state(path)["m"]),
], ids=["model", "state"])
def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, write, read):
    path = tmp_path / "ckpt.bin"
    write(path, 0)
    before = read(path)
    monkeypatch.setattr(checkpoint, "open", FullDiskFile, raising=False)
    with pytest.raises(LlmpyError, match=f"^{tmp_path / 'ckpt.bin.tmp'}: cannot write: No space left on device$"):
        write(path, 7)
    np.testing.assert_array_equal(read(path), before)
    assert os.listdir(tmp_path) == ["ckpt.bin"]


# -----------------------------------------------------------------------------
# training state

@pytest.mark.parametrize("with_master", [True, False])
def test_state_round_trips(tmp_path, with_master):
    rng = np.random.default_rng(1234)
    rng.random(5)
    m, v, master = rng.standard_normal((3, 1000)).astype(np.float32)
    loader_state = {"shard": 3, "position": 12_345_678_901}
    extra = {"val_loss": 3.25, "world_size": 8, "note": "résumé"}
    write_state(tmp_path / "s.bin", step=500, m=m, v=v, master=master if with_master else None,
                rng_state=rng.bit_generator.state, loader_state=loader_state, extra=extra)
    state = read_state(tmp_path / "s.bin")
    assert state["step"] == 500
    np.testing.assert_array_equal(state["m"], m)
    np.testing.assert_array_equal(state["v"], v)
    if with_master:
        np.testing.assert_array_equal(state["master"], master)
    else:
        assert state["master"] is None
    assert state["loader_state"] == loader_state
    assert state["extra"] == extra
    resumed = np.random.default_rng()
    resumed.bit_generator.state = state["rng_state"]
    np.testing.assert_array_equal(resumed.random(10), rng.random(10))


def test_a_state_of_no_params_round_trips(tmp_path):
    empty = np.zeros(0, dtype=np.float32)
    write_state(tmp_path / "s.bin", step=3, m=empty, v=empty, master=None, rng_state={}, loader_state={},
                extra={"note": "none"})
    state = read_state(tmp_path / "s.bin")
    assert state["m"].size == state["v"].size == 0 and state["extra"] == {"note": "none"}


@pytest.mark.parametrize("which, name", [("m", "AdamW m"), ("v", "AdamW v"), ("master", "master weights")])
def test_a_nan_or_inf_in_a_state_file_is_named_by_its_array_and_element(tmp_path, which, name):
    arrays = dict(zip(("m", "v", "master"), np.random.default_rng(5).standard_normal((3, 100)).astype(np.float32)))
    arrays[which][7] = np.inf if which == "v" else np.nan
    write_state(tmp_path / "s.bin", step=1, **arrays, rng_state={}, loader_state={}, extra={})
    with pytest.raises(LlmpyError) as error:
        read_state(tmp_path / "s.bin")
    bad = "inf" if which == "v" else "nan"
    assert str(error.value).startswith(f"{tmp_path / 's.bin'}: {name} holds {bad} at element 7: NaN and inf")


def test_write_state_refuses_m_v_and_master_of_different_sizes_and_writes_nothing(tmp_path):
    m, v, master = np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^m, v and master must have the same size, got \[4, 4, 3\]$"):
        write_state(tmp_path / "s.bin", step=1, m=m, v=v, master=master, rng_state={}, loader_state={}, extra={})
    assert os.listdir(tmp_path) == []


def test_a_state_file_holds_fp32_whatever_the_arrays_dtype(tmp_path):
    m, v = np.random.default_rng(6).standard_normal((2, 50))      # float64
    write_state(tmp_path / "s.bin", step=1, m=m, v=v, master=None, rng_state={}, loader_state={}, extra={})
    state = read_state(tmp_path / "s.bin")
    np.testing.assert_array_equal(state["m"], m.astype(np.float32))
    np.testing.assert_array_equal(state["v"], v.astype(np.float32))


def replace_trailer(path, data):
    nbytes = int(np.fromfile(path, dtype="<i4", count=256)[6])
    truncate(path, os.path.getsize(path) - nbytes)
    append(path, data)
    set_header(path, 6, len(data))


@pytest.mark.parametrize("corrupt, expected", [
    (os.remove, "No such file"),
    (lambda p: truncate(p, 1000), "shorter than the 1024-byte header"),
    (lambda p: set_header(p, 0, 20240326), "not an llmpy state file"),
    (lambda p: set_header(p, 1, 2), r"\(supported: 1\)$"),
    (lambda p: set_header(p, 3, 2), "bad header"),
    (lambda p: set_header(p, 2, -1), "bad header: step=-1 "),
    (lambda p: [set_header(p, i, -1) for i in (4, 5)], "bad header: step=0 params=-1 "),   # int64 in [4:6]
    (lambda p: set_header(p, 6, -1), "bad header: .* json_bytes=-1$"),
    (lambda p: truncate(p, os.path.getsize(p) - 10),
     f"its header says {num_parameters(CFG)} params, 2 arrays, [0-9]+ JSON bytes, which needs"),
    (lambda p: replace_trailer(p, b"{not json"), "corrupt JSON trailer: JSONDecodeError: "),
    (lambda p: replace_trailer(p, b'{"rng_state": {}}'), "corrupt JSON trailer: KeyError: 'loader_state'$"),
    (lambda p: replace_trailer(p, b""), "corrupt JSON trailer"),
], ids=["missing", "short-header", "bad-magic", "bad-version", "unknown-flags", "negative-step",
        "negative-params", "negative-json-bytes", "truncated", "bad-json", "json-missing-keys", "no-json"])
def test_bad_state_file_raises_one_line_error_naming_it(tmp_path, corrupt, expected):
    path = tmp_path / "s.bin"
    write_some_state(path, 0)
    corrupt(path)
    with pytest.raises(LlmpyError, match=expected) as error:
        read_state(path)
    assert_one_line_naming(error, path)


# -----------------------------------------------------------------------------
# the header reader that model, state, shard and eval files share (llmpy/llmc_file.py)

def test_read_header_gives_the_256_header_ints_alone_and_the_file_size(tmp_path):
    header = [20240326, 3, 16, 100, 2, 2, 16, 128] + [0] * 248
    (tmp_path / "m.bin").write_bytes(struct.pack("<256i", *header) + b"\x07" * 4000)
    read, size = read_header(tmp_path / "m.bin", MODEL)
    np.testing.assert_array_equal(read, header)
    assert size == 1024 + 4000


def test_a_model_file_s_header_error_begins_with_its_path_alone(tmp_path):
    path = tmp_path / "m.bin"
    write_model(path, CFG, random_params())
    set_header(path, 0, 20240520)
    with pytest.raises(LlmpyError) as error:
        read_model(path)
    assert str(error.value) == f"{path}: not an llm.c model file (bad magic 20240520, expected 20240326)"


def test_an_unreadable_path_other_than_a_missing_file_gives_the_os_reason_not_not_found(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"")
    path = tmp_path / "m.bin" / "model.bin"             # under a file: ENOTDIR, not ENOENT
    with pytest.raises(LlmpyError) as error:
        read_model(path)
    assert str(error.value) == f"{path}: cannot read llm.c model file: {os.strerror(errno.ENOTDIR)}"


# -----------------------------------------------------------------------------
# checkpoint folder

def test_checkpoint_paths_use_llmc_names():
    assert checkpoint_paths("out", 5000, 3) == (os.path.join("out", "model_00005000.bin"),
                                                os.path.join("out", "state_00005000_00003.bin"))


def test_done_marker_is_an_empty_llmc_named_file(tmp_path):
    write_done_marker(tmp_path, 40)
    assert os.path.getsize(tmp_path / "DONE_00000040") == 0


def test_latest_checkpoint_step_ignores_steps_without_done_marker(tmp_path):
    for step in (10, 20, 30):
        model_path, state_path = checkpoint_paths(tmp_path, step, 0)
        write_model(model_path, CFG, random_params())
        write_some_state(state_path, step)
    write_done_marker(tmp_path, 10)
    write_done_marker(tmp_path, 20)
    assert latest_checkpoint_step(tmp_path) == 20


def test_latest_checkpoint_step_is_the_largest_of_several(tmp_path):
    for step in (10, 20, 30):
        write_done_marker(tmp_path, step)
    assert latest_checkpoint_step(tmp_path) == 30

def test_latest_checkpoint_step_is_none_without_any_checkpoint(tmp_path):
    assert latest_checkpoint_step(tmp_path) is None
    assert latest_checkpoint_step(tmp_path / "never-created") is None


# -----------------------------------------------------------------------------
# -nk / -nm: which checkpoints stay

def test_keep_k_keeps_the_newest_k_checkpoints():
    assert checkpoints_to_delete([2, 4, 6, 8, 10], keep=2, major_every=0) == [2, 4, 6]


def test_major_checkpoints_are_never_deleted():
    assert checkpoints_to_delete([2, 4, 6, 8, 10], keep=2, major_every=4) == [2, 6]


def test_major_every_one_makes_every_checkpoint_major():
    # llm.c deletes a step only when step % major_checkpoint_every != 0: with -nm 1, never
    assert checkpoints_to_delete([2, 4, 6, 8, 10], keep=2, major_every=1) == []

def test_keep_zero_keeps_every_checkpoint():
    assert checkpoints_to_delete([2, 4, 6], keep=0, major_every=0) == []


def test_an_off_grid_last_step_counts_as_the_newest():
    # -n 4 -x 10 writes 4, 8 and the last step, 10
    assert checkpoints_to_delete([4, 8, 10], keep=1, major_every=0) == [4, 8]


def fake_checkpoint(out_dir, step, ranks=1):
    model_path, _ = checkpoint_paths(out_dir, step, rank=0)
    open(model_path, "wb").close()
    for rank in range(ranks):
        open(checkpoint_paths(out_dir, step, rank=rank)[1], "wb").close()
    write_done_marker(out_dir, step)


def test_delete_checkpoint_removes_model_every_rank_state_and_done_marker(tmp_path):
    fake_checkpoint(tmp_path, 5, ranks=3)
    fake_checkpoint(tmp_path, 50)
    delete_checkpoint(tmp_path, 5)
    assert sorted(os.listdir(tmp_path)) == ["DONE_00000050", "model_00000050.bin", "state_00000050_00000.bin"]


def test_delete_checkpoint_leaves_files_that_only_look_like_its_own(tmp_path):
    fake_checkpoint(tmp_path, 2)
    users = ["state_00000002_00000.orig.bin", "state_00000002_0.bin", "model_00000002.bin.bak", "model_00000002.binx"]
    for name in users:
        (tmp_path / name).write_bytes(b"a user's file")
    delete_checkpoint(tmp_path, 2)
    assert sorted(os.listdir(tmp_path)) == sorted(users)


def test_complete_checkpoint_steps_are_those_with_a_done_marker_in_order(tmp_path):
    for step in (30, 10, 20):
        fake_checkpoint(tmp_path, step)
    os.remove(tmp_path / "DONE_00000020")
    assert complete_checkpoint_steps(tmp_path) == [10, 30]
    assert complete_checkpoint_steps(tmp_path / "missing") == []


def test_stale_temp_files_of_complete_checkpoints_are_removed_and_nothing_else(tmp_path):
    fake_checkpoint(tmp_path, 4, ranks=2)
    leftovers = ["model_00000004.bin.tmp", "state_00000004_00001.bin.tmp", "DONE_00000004.tmp"]
    kept = ["model_00000006.bin.tmp",                    # checkpoint 6 is not complete: nothing to say it is stale
            "state_00000004_00000.orig.bin.tmp", "notes.tmp", "main.log"]
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "DONE_00000004.tmp").unlink()
    (tmp_path / "DONE_00000004.tmp").mkdir()             # not a file: left alone
    assert remove_stale_temps(tmp_path) == leftovers[:2]
    assert sorted(os.listdir(tmp_path)) == sorted(["DONE_00000004", "DONE_00000004.tmp", "model_00000004.bin",
                                                   "state_00000004_00000.bin", "state_00000004_00001.bin"] + kept)
