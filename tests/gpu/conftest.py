"""GPU tests: run by `make test-gpu`; not collected where there is no GPU (the CPU CI), and the
report header says why. Where nvidia-smi lists a GPU that CUDA cannot use, the session fails
with the reason instead of skipping everything.

Switches that let an H200 stand in for other GPUs (environment variables, read by
llmpy/cuda/runtime.py), e.g. `LLMPY_WGMMA=0 LLMPY_ARCH=compute_80 LLMPY_MAX_SHARED_KB=163 make
test-gpu` for an A100's code path:
  LLMPY_WGMMA=0           attention on the mma.sync kernels (the non-Hopper path) on a Hopper
  LLMPY_ARCH=compute_80   compile PTX for that virtual architecture, JIT-compiled by the driver
  LLMPY_MAX_SHARED_KB=99  cap the shared memory a block may take (99: RTX 30/40/50, L4; 163: A100)
  LLMPY_SYNC=1            synchronise after every kernel launch (eager, no CUDA graph)
"""
import pytest

from llmpy.backends import gpus_seen

try:
    from llmpy import cuda
    REASON = cuda.unavailable_reason()
except ImportError as e:
    REASON = f"the CUDA backend cannot be imported ({e})"

LISTED = gpus_seen() if REASON else []
if LISTED:
    pytest.exit(f"nvidia-smi lists {LISTED[0]} but the GPU tests cannot use it: {REASON}", returncode=1)


def pytest_ignore_collect(collection_path, config):
    if REASON and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_report_header(config):
    return f"GPU tests: {'skipped: ' + REASON if REASON else 'running'}"
