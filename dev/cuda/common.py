"""Shared by the dev/cuda scripts: bf16 transfers, poisoned outputs, checks against the NumPy
reference (llmpy/cpu.py), CUDA-event timing and the result table. Each script runs as
`python dev/cuda/<family>.py [version]` from the repository root."""
import sys
from pathlib import Path

DEV_DIR = Path(__file__).resolve().parent
ROOT = DEV_DIR.parents[1]
sys.path.insert(0, str(ROOT))   # dev/ is not a package: let the scripts import llmpy

import cupy as cp          # noqa: E402
import numpy as np         # noqa: E402

from llmpy.cuda.runtime import module   # noqa: E402
# the same bf16 helpers and error measure as the GPU tests
from tests.gpu.bf16 import bf16, gpu, host, poisoned, randn   # noqa: E402,F401
from tests.helpers import rel_error   # noqa: E402,F401


def dev_module(name):
    """dev/cuda/<name>.cu, the earlier versions of a family's kernels, built like kernels/."""
    return module(DEV_DIR / f"{name}.cu")


def time_ms(fn, warmup=3, repeats=20):
    """Median milliseconds of fn() over `repeats` runs after `warmup`, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def selected_versions(versions):
    """The versions named on the command line (all when none is)."""
    picked = [int(a) for a in sys.argv[1:]] or sorted(versions)
    unknown = [v for v in picked if v not in versions]
    if unknown:
        sys.exit(f"unknown version(s) {unknown}; this script has {sorted(versions)}")
    return picked
