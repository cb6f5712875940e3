"""Choosing the ops module that the model runs on: llmpy.cpu (NumPy) or llmpy.cuda (CuPy).
A machine whose nvidia-smi lists a GPU never trains on the CPU without one line saying why."""
import importlib.metadata
import shutil
import subprocess
import sys

from llmpy import LlmpyError, cpu
from llmpy.kernel_options import MIN_CAPABILITY

REINSTALL = "run `make clean install` on this machine"
FP8_MIN_CAPABILITY = 89     # FP8 tensor cores: Ada and Hopper


def load(device):
    """device: "cpu", "cuda" or "auto" (cuda where it can be used, else cpu; where nvidia-smi
    lists a GPU that CUDA cannot use, auto says why on stderr before it takes the CPU)."""
    if device == "cpu":
        return cpu
    try:
        from llmpy import cuda
        reason = cuda.unavailable_reason()
    except ImportError as e:
        cuda, reason = None, f"the CUDA backend cannot be imported ({e}): {REINSTALL}"
    if reason is None:
        return cuda
    if device == "cuda":
        raise LlmpyError(f"--device cuda: {reason}")
    gpus = gpus_seen()
    if gpus:
        print(f"warning: nvidia-smi lists {gpus[0]}{' and more' if len(gpus) > 1 else ''} but "
              f"llmpy cannot use it: {reason}; training on the CPU", file=sys.stderr, flush=True)
    return cpu


def gpus_seen():
    """The GPUs that nvidia-smi -L lists ("NVIDIA A100-SXM4-80GB", ...): none where it is absent."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split(":", 1)[1].split("(UUID")[0].strip()
            for line in listing.splitlines() if line.startswith("GPU ") and ":" in line]


def capability_problem(name, capability):
    """Why a GPU of this compute capability ("75": 7.5) cannot run llmpy's kernels, or None."""
    if int(capability) >= MIN_CAPABILITY:
        return None
    return (f"{name} has compute capability {capability[:-1]}.{capability[-1]}; llmpy's kernels "
            f"need {MIN_CAPABILITY // 10}.{MIN_CAPABILITY % 10} or newer (A100, A10, L4, RTX 30xx "
            "and later)")


def fp8_capability_problem(name, capability):
    """Why --fp8 1 cannot run on a GPU of this compute capability, or None: cuBLASLt's FP8
    products need FP8 tensor cores (Ada and Hopper: 8.9 and newer)."""
    if int(capability) >= FP8_MIN_CAPABILITY:
        return None
    return (f"{name} has compute capability {capability[:-1]}.{capability[-1]}; FP8 matmuls need "
            f"{FP8_MIN_CAPABILITY // 10}.{FP8_MIN_CAPABILITY % 10} or newer (L4, L40S, RTX 40xx, H100, H200)")


def cupy_build():
    """The CuPy wheel installed ("cupy-cuda13x", ...), or None."""
    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        try:
            importlib.metadata.version(dist)
            return dist
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def driver_problem(driver_version, build):
    """Why the driver (cudaDriverGetVersion: 12040 for CUDA 12.4; 0: no driver found) cannot
    run this CuPy build, or None."""
    built_for = build.removeprefix("cupy-cuda").removesuffix("x") if build else ""
    if not driver_version or not built_for.isdigit() or driver_version // 1000 >= int(built_for):
        return None
    return (f"the driver supports CUDA {driver_version // 1000}.{driver_version % 1000 // 10} but "
            f"{build} (for CUDA {built_for}) is installed: {REINSTALL}")
