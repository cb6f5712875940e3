"""How our CUDA sources are compiled: the NVRTC options and the target architecture, kept apart
from llmpy/cuda (which needs CuPy) so that the CPU CI builds every kernel with nvcc for every
GPU generation we support, with exactly the options the runtime gives NVRTC.

The target is the GPU's own machine code (sm_XY; sm_90a on Hopper, whose wgmma instructions need
the 'a' target) unless LLMPY_ARCH names another: `LLMPY_ARCH=compute_80` compiles PTX for that
virtual architecture, which the driver JIT-compiles for the GPU at load time (on an H200: the
code an A100 would run, minus the A100's own instruction scheduling)."""
import os
from pathlib import Path

from llmpy import LlmpyError
from llmpy.launch_config import KNOBS

# the repository's kernels/ in a checkout (and an editable install); llmpy/kernels in an installed copy
_PACKAGED = Path(__file__).resolve().parent / "kernels"
KERNEL_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "kernels"
# no --use_fast_math: expf/tanhf keep full fp32 accuracy, so the only error is bf16 storage
OPTIONS = ("-std=c++17", f"-I{KERNEL_DIR}")
MIN_CAPABILITY = 80      # cp.async, bf16 tensor-core mma: Ampere and newer
WGMMA_TARGET = "sm_90a"
WGMMA_SOURCES = ("flash_attention_wgmma",)      # build for WGMMA_TARGET only
# what CI compiles every kernel for: A100; A10/A40/RTX 30; L4/L40S/RTX 40; H100/H200; B200; RTX 50
CI_TARGETS = ("sm_80", "sm_86", "sm_89", "sm_90a", "sm_100", "sm_120")


def builds_for(source, arch):
    """Whether kernels/<source>.cu is built for arch: the wgmma sources for WGMMA_TARGET only."""
    return arch == WGMMA_TARGET or source not in WGMMA_SOURCES


def target(compute_capability, override=None):
    """The -arch NVRTC compiles for: override (LLMPY_ARCH: "compute_NN" or "sm_NN[a]") where
    given, else sm_90a on Hopper and the device's own sm_XY elsewhere."""
    if override:
        digits = override.removeprefix("compute_").removeprefix("sm_").removesuffix("a")
        if not override.startswith(("compute_", "sm_")) or not digits.isdigit():
            raise LlmpyError(f"LLMPY_ARCH={override}: expected compute_NN or sm_NN (e.g. compute_80)")
        if int(digits) < MIN_CAPABILITY:
            raise LlmpyError(f"LLMPY_ARCH={override}: llmpy's kernels need {MIN_CAPABILITY} or newer")
        return override
    cc = str(compute_capability)
    return WGMMA_TARGET if cc == "90" else f"sm_{cc}"


def target_from_env(compute_capability):
    return target(compute_capability, os.environ.get("LLMPY_ARCH"))


def defines(source, overrides=()):
    """-DNAME=value for kernels/<source>.cu's knobs (launch_config.KNOBS), each overridden by a
    "-DNAME=value" of `overrides` (dev/cuda's variants)."""
    values = dict(KNOBS.get(source, {}))
    for option in overrides:
        name, _, value = option.removeprefix("-D").partition("=")
        values[name] = value
    return tuple(f"-D{name}={value}" for name, value in values.items())


def arch_option(arch):
    return f"-arch={arch}"
