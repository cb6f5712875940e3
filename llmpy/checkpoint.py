"""Checkpoints: llm.c model files, and the optimizer/loader state needed to resume training.

Model file (llm.c's format, train_gpt2.c/.cu gpt2_build_from_checkpoint), little-endian:
    int32[256] header: [0] 20240326, [1] version (3 = fp32 params, 5 = bf16 params),
                       [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp, rest 0
    then all parameters in llm.c's order (config.PARAM_NAMES), fp32 or bf16 (raw uint16).
Every version-3 file llm.c writes carries Vp; one with header[7] == 0 predates padding (its
first versions) and is rejected like any other non-positive size: re-export it with llm.c.

State file (ours; llm.c's state_XXXXXXXX_RANK.bin in spirit), little-endian:
    int32[256] header: [0] 20240527, [1] version 1, [2] step,
                       [3] flags (bit 0: master weights follow), [4:6] n, the number of
                       params in this rank's m/v (int64, as two words), [6] JSON trailer bytes
    then m, v and, if flagged, master weights: fp32[n] each
    then a UTF-8 JSON object {"rng_state": ..., "loader_state": ..., "extra": ...}.

Readers never unpickle: they check the header and the file size, then read raw arrays with
an explicit dtype and offset, and refuse NaN and inf. A bad file raises LlmpyError with one
line naming file and fault. Writers go through a temp file (fsync, rename, fsync of the
folder), so a crash or a full disk leaves the previous file in place, never a torn one under
the final name, and a file once renamed survives a power cut.
"""
import json
import os
import re

import numpy as np

from llmpy import LlmpyError
from llmpy.config import GPT2Config, num_parameters, param_shapes
from llmpy.llmc_file import HEADER_BYTES, MODEL, STATE, check_size, new_header, read_header

MODEL_VERSIONS = {dtype: version for version, dtype in MODEL.versions.items()}   # fp32: 3, bf16: 5
STATE_VERSION = 1
STATE_HAS_MASTER = 1


# -----------------------------------------------------------------------------
# bf16 <-> fp32 (host side, for files; the GPU has its own kernels)

def fp32_to_bf16(x):
    """fp32 -> bf16 bits as uint16, round to nearest, ties to even; NaN stays NaN."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    u = f.view(np.uint32)
    # add 0x7FFF plus the lowest kept bit: above half rounds up, exactly half rounds to the even
    # side; a carry into the exponent is correct rounding (the largest values become inf).
    # In place, with one temporary: a 124M model is 500 MB of fp32.
    r = (u >> 16) & 1
    r += 0x7FFF
    r += u
    r >>= 16
    out = r.astype(np.uint16)
    # that carry would turn a NaN with a small payload into inf, so NaNs get the canonical quiet NaN
    out[np.isnan(f)] = 0x7FC0
    return out


def bf16_to_fp32(u16):
    """bf16 bits (uint16) -> fp32, exactly: bf16 is the top half of an fp32."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# -----------------------------------------------------------------------------
# shared file plumbing

def write_atomic(path, parts):
    """Write the bytes-like `parts` to path.tmp, make it durable, then rename it onto path.
    An OSError (a full disk, a folder in the way) becomes one line naming the file."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data does
        os.replace(tmp, path)
        _fsync_folder(path)       # the rename is in the folder's data: durable once it is
    except BaseException as e:
        if os.path.isfile(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise LlmpyError(f"{e.filename or tmp}: cannot write: {e.strerror}") from None
        raise


def _fsync_folder(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_finite(path, named_arrays):
    """NaN and inf are never weights or optimizer state: one line naming the file, the tensor
    and the first bad element. named_arrays: (name, flat array) pairs."""
    for name, a in named_arrays:
        # a float64 sum: one pass, no temporary, and non-finite exactly when an element is
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(a.sum(dtype=np.float64))
        if not finite:
            i = int(np.argmin(np.isfinite(a)))
            raise LlmpyError(f"{path}: {name} holds {a[i]} at element {i:,}: NaN and inf are not trainable values")


def named_params(cfg, params):
    """The flat params as (llm.c tensor name, flat view) pairs."""
    out, offset = [], 0
    for name, shape in param_shapes(cfg).items():
        n = int(np.prod(shape))
        out.append((name, params[offset:offset + n]))
        offset += n
    return out


# -----------------------------------------------------------------------------
# model files

def write_model(path, cfg, params, dtype="fp32"):
    """Write cfg and the flat fp32 `params` as an llm.c model file, fp32 (version 3) or bf16 (version 5)."""
    if dtype not in MODEL_VERSIONS:
        raise ValueError(f"dtype must be one of {', '.join(MODEL_VERSIONS)}, not {dtype!r}")
    n = num_parameters(cfg)
    if params.size != n:
        raise ValueError(f"params has {params.size} elements, the config needs {n}")
    header = new_header(MODEL, MODEL_VERSIONS[dtype], cfg.max_seq_len, cfg.vocab_size,
                        cfg.num_layers, cfg.num_heads, cfg.channels, cfg.padded_vocab_size)
    if dtype == "fp32":
        body = np.ascontiguousarray(params.ravel(), dtype="<f4")
    else:
        body = fp32_to_bf16(params.ravel()).astype("<u2", copy=False)
    write_atomic(path, [header, body])


def read_model(path):
    """Read an llm.c model file (version 3 or 5). Returns (GPT2Config, flat fp32 params)."""
    cfg, version, size = _model_header(path)
    n = num_parameters(cfg)
    itemsize = 4 if version == MODEL_VERSIONS["fp32"] else 2
    check_size(path, MODEL, size, HEADER_BYTES + n * itemsize, f"version {version}, {describe(cfg)}: {n} params")
    if version == MODEL_VERSIONS["fp32"]:
        params = np.fromfile(path, dtype="<f4", count=n, offset=HEADER_BYTES)
    else:
        params = bf16_to_fp32(np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES))
    check_finite(path, named_params(cfg, params))
    return cfg, params


def read_model_config(path):
    """The GPT2Config of an llm.c model file, from its header alone."""
    return _model_header(path)[0]


def describe(cfg):
    return (f"maxT={cfg.max_seq_len} V={cfg.vocab_size} L={cfg.num_layers} NH={cfg.num_heads} "
            f"C={cfg.channels} Vp={cfg.padded_vocab_size}")


def _model_header(path):
    header, size = read_header(path, MODEL)
    version = int(header[1])
    maxT, V, L, NH, C, Vp = (int(h) for h in header[2:8])
    shape = f"maxT={maxT} V={V} L={L} NH={NH} C={C} Vp={Vp}"
    if min(maxT, V, L, NH, C, Vp) <= 0:
        raise LlmpyError(f"{path}: bad header: sizes must be positive ({shape})")
    if Vp < V:
        raise LlmpyError(f"{path}: bad header: padded vocab Vp={Vp} is smaller than V={V}")
    if C % NH:
        raise LlmpyError(f"{path}: bad header: C={C} is not divisible by NH={NH}")
    cfg = GPT2Config(max_seq_len=maxT, vocab_size=V, padded_vocab_size=Vp,
                     num_layers=L, num_heads=NH, channels=C)
    return cfg, version, size


# -----------------------------------------------------------------------------
# training state, for resume

def write_state(path, *, step, m, v, master, rng_state, loader_state, extra):
    """Write one rank's AdamW m and v, optional fp32 master weights (None: none), the rng and
    data loader states and `extra`; the last three must be JSON-able."""
    arrays = [m, v] if master is None else [m, v, master]
    n = m.size
    if any(a.size != n for a in arrays):
        raise ValueError(f"m, v and master must have the same size, got {[a.size for a in arrays]}")
    # serialise first, so a value JSON cannot hold fails before anything is written
    trailer = json.dumps({"rng_state": rng_state, "loader_state": loader_state, "extra": extra}).encode("utf-8")
    header = new_header(STATE, STATE_VERSION, step, 0 if master is None else STATE_HAS_MASTER)
    header[4:6] = np.array([n], dtype="<i8").view("<i4")
    header[6] = len(trailer)
    body = [np.ascontiguousarray(a.ravel(), dtype="<f4") for a in arrays]
    write_atomic(path, [header, *body, trailer])


def read_state(path):
    """Read a state file. Returns a dict: step, m, v, master (None if absent), rng_state,
    loader_state, extra."""
    header, size = read_header(path, STATE)
    step, flags, trailer_bytes = int(header[2]), int(header[3]), int(header[6])
    n = int(header[4:6].view("<i8")[0])
    if step < 0 or n < 0 or trailer_bytes < 0 or flags & ~STATE_HAS_MASTER:
        raise LlmpyError(f"{path}: bad header: step={step} params={n} flags={flags} json_bytes={trailer_bytes}")
    count = 3 if flags & STATE_HAS_MASTER else 2
    check_size(path, STATE, size, HEADER_BYTES + count * 4 * n + trailer_bytes,
                f"{n} params, {count} arrays, {trailer_bytes} JSON bytes")

    def array(i):
        return np.fromfile(path, dtype="<f4", count=n, offset=HEADER_BYTES + i * 4 * n)
    m, v = array(0), array(1)
    master = array(2) if count == 3 else None
    check_finite(path, [("AdamW m", m), ("AdamW v", v)] + ([("master weights", master)] if count == 3 else []))
    raw = np.fromfile(path, dtype=np.uint8, count=trailer_bytes, offset=HEADER_BYTES + count * 4 * n).tobytes()
    try:
        trailer = json.loads(raw.decode("utf-8"))
        rng_state, loader_state, extra = trailer["rng_state"], trailer["loader_state"], trailer["extra"]
    except (ValueError, TypeError, KeyError) as e:
        raise LlmpyError(f"{path}: corrupt JSON trailer: {type(e).__name__}: {e}") from None
    return dict(step=step, m=m, v=v, master=master, rng_state=rng_state, loader_state=loader_state, extra=extra)


# -----------------------------------------------------------------------------
# checkpoint folder: llm.c's names; DONE_%08d is written last, once every rank has saved.
# -nk/-nm prune it to the newest k complete checkpoints plus those at multiples of m steps.

def checkpoint_paths(out_dir, step, rank):
    """(model path, state path) of checkpoint `step` for process `rank`, named as llm.c names them."""
    return (os.path.join(out_dir, f"model_{step:08d}.bin"),
            os.path.join(out_dir, f"state_{step:08d}_{rank:05d}.bin"))


def write_done_marker(out_dir, step):
    """Mark checkpoint `step` complete: an empty DONE_%08d file, written as durably as the rest."""
    write_atomic(os.path.join(out_dir, f"DONE_{step:08d}"), [])


TEMP_NAME = re.compile(r"(?:model_(\d{8})\.bin|state_(\d{8})_\d{5}\.bin|DONE_(\d{8}))\.tmp")


def remove_stale_temps(out_dir):
    """Remove the temp files a crash left behind of the complete checkpoints in out_dir (exact
    checkpoint names only); returns their names."""
    complete = set(complete_checkpoint_steps(out_dir))
    removed = []
    for name in sorted(os.listdir(out_dir)):
        m = TEMP_NAME.fullmatch(name)
        path = os.path.join(out_dir, name)
        if m and int(m[1] or m[2] or m[3]) in complete and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def complete_checkpoint_steps(out_dir):
    """Steps of the complete checkpoints (those with a DONE marker) in out_dir, ascending;
    [] when out_dir does not exist."""
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m[1]) for m in map(re.compile(r"DONE_(\d+)").fullmatch, names) if m)


def latest_checkpoint_step(out_dir):
    """The largest step with a DONE marker in out_dir, or None (also when out_dir does not exist)."""
    steps = complete_checkpoint_steps(out_dir)
    return steps[-1] if steps else None


def checkpoints_to_delete(steps, keep, major_every):
    """llm.c's -nk/-nm policy: of the complete checkpoints `steps`, keep the newest `keep`
    (keep <= 0: keep all) and every one whose step is a multiple of `major_every` (> 0);
    return the others, ascending."""
    if keep <= 0:
        return []
    newest = set(sorted(steps)[-keep:])
    return [s for s in sorted(steps)
            if s not in newest and not (major_every > 0 and s % major_every == 0)]


def delete_checkpoint(out_dir, step):
    """Remove checkpoint `step`: its DONE marker first (so it is never taken for a complete
    one while its files go), then the model file and every rank's state file."""
    done = os.path.join(out_dir, f"DONE_{step:08d}")
    if os.path.exists(done):
        os.remove(done)
    # exact names only: a user's state_00000002_00000.orig.bin is not the checkpoint's
    names = re.compile(rf"model_{step:08d}\.bin|state_{step:08d}_\d{{5}}\.bin")
    for name in os.listdir(out_dir):
        if names.fullmatch(name):
            os.remove(os.path.join(out_dir, name))
