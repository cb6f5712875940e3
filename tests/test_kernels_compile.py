"""Every CUDA source (kernels/ and dev/cuda/) compiles for sm_90a with nvcc, using the options
the runtime gives NVRTC. Runs on the CPU CI; skipped where nvcc is absent."""
import shutil
import subprocess
from pathlib import Path

import pytest

from llmpy.kernel_options import KERNEL_DIR, OPTIONS, arch_option

ROOT = KERNEL_DIR.parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu")) + sorted((ROOT / "dev" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_kernel_source_compiles_for_sm90(source, tmp_path):
    cmd = [NVCC, "-cubin", arch_option("90"), *OPTIONS, str(source), "-o", str(tmp_path / "k.cubin")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
