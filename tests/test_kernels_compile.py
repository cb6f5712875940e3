"""Every CUDA source (kernels/ and dev/cuda/) compiles with nvcc for every GPU generation we
support (the wgmma file for sm_90a only), with the options and knobs (-D) the runtime gives
NVRTC; and every
kernel's shared memory at d12 and d48, its static bytes as ptxas reports them plus what its
launcher asks for (llmpy/launch_config.py), fits each generation's limit. Runs on the CPU CI;
skipped where nvcc is absent."""
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmpy.kernel_options import (CI_TARGETS, KERNEL_DIR, OPTIONS, WGMMA_TARGET, arch_option, builds_for,
                                  defines)
from llmpy.launch_config import GENERATIONS, HOPPER, Limits, model_requests

ROOT = KERNEL_DIR.parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu")) + sorted((ROOT / "dev" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
BUILDS = [(source, arch) for source in SOURCES for arch in CI_TARGETS
          if builds_for(source.stem, arch)]


@functools.cache
def ptxas_report(source, arch):
    """(nvcc's exit status, its output with ptxas's per-kernel report) for one build."""
    out = Path("/tmp") / f"llmpy-{source.stem}-{arch}-{source.parent.name}.cubin"
    r = subprocess.run([NVCC, "-cubin", arch_option(arch), *OPTIONS, *defines(source.stem), "-Xptxas", "-v", str(source),
                        "-o", str(out)], capture_output=True, text=True)
    out.unlink(missing_ok=True)
    return r.returncode, r.stderr


def static_shared(arch):
    """static(source, kernel): the kernel's static shared memory in bytes, built for arch."""
    def static(source, kernel):
        status, report = ptxas_report(KERNEL_DIR / f"{source}.cu", arch)
        assert status == 0, report
        start = report.index(f"Compiling entry function '{kernel}'")
        end = report.find("Compiling entry function", start + 1)
        found = re.search(r"(\d+) bytes smem", report[start:end if end >= 0 else None])
        return int(found.group(1)) if found else 0
    return static


@needs_nvcc
@pytest.mark.parametrize("source, arch", BUILDS,
                         ids=[f"{s.relative_to(ROOT)}-{a}" for s, a in BUILDS])
def test_kernel_source_compiles(source, arch):
    status, report = ptxas_report(source, arch)
    assert status == 0, report


# each generation's own limits, and an H200 capped to stand in for the others
# (LLMPY_MAX_SHARED_KB=99 and 163)
LIMITS = [(arch, GENERATIONS[arch]) for arch in CI_TARGETS] + \
         [(WGMMA_TARGET, HOPPER.capped(99)), (WGMMA_TARGET, HOPPER.capped(163))]


@needs_nvcc
@pytest.mark.parametrize("C", [768, 1600], ids=["d12", "d48"])
@pytest.mark.parametrize("arch, limits", LIMITS,
                         ids=[f"{a}-{lim.per_block // 1024}KB" for a, lim in LIMITS])
def test_every_launch_fits_the_shared_memory_of_the_gpu(arch, limits, C):
    static = static_shared(arch)
    for (source, kernel), dynamic in model_requests(C, limits, static).items():
        if not builds_for(source, arch):
            continue
        total = static(source, kernel) + dynamic
        assert total <= limits.per_block, f"{kernel}: {total} bytes, limit {limits.per_block}"


@needs_nvcc
@pytest.mark.parametrize("arch", CI_TARGETS)
def test_two_classifier_blocks_share_an_sm(arch):
    limits = GENERATIONS[arch]
    kernel = ("classifier", "classifier_forward_backward")
    static = static_shared(arch)(*kernel)
    dynamic = model_requests(768, limits, static_shared(arch))[kernel]
    assert dynamic > 0
    assert 2 * (static + dynamic + limits.reserved) <= limits.per_sm


def test_capped_limits_stand_in_for_a_smaller_gpu():
    assert HOPPER.capped(99) == GENERATIONS["sm_86"]
    assert HOPPER.capped(163) == GENERATIONS["sm_80"]
    assert HOPPER.capped(300) == HOPPER


def test_layernorm_backward_takes_fewer_warps_where_shared_memory_is_short():
    small = Limits(per_block=64 * 1024, per_sm=65 * 1024)
    requests = model_requests(4096, small, lambda source, kernel: 0)
    assert requests["layernorm", "layernorm_backward_shared"] == 2 * 2 * 4096 * 4   # 2 warps


def test_a_kernel_without_its_knobs_refuses_to_build(tmp_path):
    """The knobs have one owner (launch_config.KNOBS): a build that forgets them fails loudly
    instead of taking a default the launcher may not share."""
    if NVCC is None:
        pytest.skip("nvcc not found")
    r = subprocess.run([NVCC, "-cubin", arch_option("sm_80"), *OPTIONS, str(KERNEL_DIR / "matmul.cu"),
                        "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode != 0 and "BIAS_WARPS: set by llmpy/launch_config.py" in r.stderr


def test_dev_variants_override_a_knob():
    assert dict(d.split("=") for d in defines("flash_attention_wgmma", ("-DFWD_STAGES=2",)))["-DFWD_STAGES"] == "2"
    assert "-DBWD_STAGES=3" in defines("flash_attention_wgmma", ("-DFWD_STAGES=2",))
