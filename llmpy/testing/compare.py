"""Errors relative to a tensor's scale, the measure every check against a reference uses."""
import numpy as np


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
