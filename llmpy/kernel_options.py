"""How our CUDA sources are compiled, kept apart from llmpy/cuda (which needs CuPy) so that the
CPU CI can build every kernel with nvcc using exactly the options the runtime gives NVRTC."""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"
# no --use_fast_math: expf/tanhf keep full fp32 accuracy, so the only error is bf16 storage
OPTIONS = ("-std=c++17", f"-I{KERNEL_DIR}")


def arch_option(compute_capability):
    """sm_90a on Hopper (wgmma needs the 'a' target), the device's own arch elsewhere."""
    cc = str(compute_capability)
    return f"-arch=sm_{cc}a" if cc == "90" else f"-arch=sm_{cc}"
