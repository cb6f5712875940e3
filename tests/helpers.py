"""Comparison helpers shared by the tests, and the programs as a user runs them."""
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_program(script, *args, check=True):
    """`python <script> --device cpu ARGS` from the repository's root, a real subprocess."""
    r = subprocess.run([sys.executable, str(ROOT / script), "--device", "cpu", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def rel_error(ours, ref):
    """max |ours - ref| / max |ref|: error relative to the tensor's scale, so that elements near
    zero don't blow it up the way an elementwise relative error would; inf where ours holds a
    NaN or inf."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != {ref.shape}"
    if not np.all(np.isfinite(ours)):
        return np.inf          # non-finite values: an unwritten, poisoned element?
    scale = np.abs(ref).max()
    return np.abs(ours - ref).max() / (scale if scale > 0 else 1.0)


def assert_close(ours, ref, tol, what=""):
    err = rel_error(ours, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"
