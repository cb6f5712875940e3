"""Which backend a run takes, and what it says: a machine whose nvidia-smi lists a GPU never
trains on the CPU without a line saying why, unless --device cpu asked for it; a GPU older than
Ampere or a driver older than the installed CuPy is named with what is needed. The CPU CI has no
CuPy: a fake nvidia-smi on PATH makes it such a machine for real; the device queries' answers are
passed in directly."""
import subprocess
import sys

from llmpy.backends import capability_problem, driver_problem, fp8_capability_problem
from tests.test_install import fake_nvidia_smi, no_nvidia_smi
from tests.test_train import ROOT, losses


def train(flags, env, device="auto"):
    return subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--device", device,
                           *map(str, [*flags, "-x", 1, "-v", 0])], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_auto_on_a_gpu_machine_without_usable_cuda_says_why_before_the_cpu(tiny_run, tmp_path):
    r = train(tiny_run, fake_nvidia_smi(tmp_path / "bin", "12.4", gpus=("NVIDIA L4",)))
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "NVIDIA L4" in warning[0] and "training on the CPU" in warning[0]
    assert 1 in losses(r.stdout)


def test_device_cpu_on_a_gpu_machine_trains_on_the_cpu_without_a_warning(tiny_run, tmp_path):
    r = train(tiny_run, fake_nvidia_smi(tmp_path / "bin", "12.4", gpus=("NVIDIA L4",)), device="cpu")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert 1 in losses(r.stdout)


def test_auto_on_a_cpu_machine_trains_without_a_warning(tiny_run):
    r = train(tiny_run, no_nvidia_smi())
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_device_cuda_without_usable_cuda_is_a_one_line_error(tiny_run, tmp_path):
    r = train(tiny_run, fake_nvidia_smi(tmp_path / "bin", "12.4"), device="cuda")
    assert r.returncode == 1 and r.stderr.startswith("error: --device cuda: ")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_gpu_tests_fail_where_a_gpu_is_listed_but_cuda_is_unusable(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=fake_nvidia_smi(tmp_path / "bin", "12.4"))
    assert r.returncode not in (0, 5)       # failed, neither passed nor "no tests collected"
    assert "lists NVIDIA A100-SXM4-80GB but the GPU tests cannot use it" in r.stdout + r.stderr


def test_gpu_tests_skip_on_a_cpu_machine():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=no_nvidia_smi())
    assert r.returncode == 5, r.stdout     # pytest's "no tests collected"


def test_gpus_older_than_ampere_are_named_with_the_requirement():
    problem = capability_problem("Tesla T4", "75")
    assert "Tesla T4" in problem and "7.5" in problem and "8.0 or newer" in problem
    assert capability_problem("Tesla V100-SXM2-16GB", "70").startswith("Tesla V100")


def test_ampere_and_newer_gpus_pass_the_capability_gate():
    for capability in ("80", "86", "89", "90", "100", "120"):
        assert capability_problem("GPU", capability) is None


def test_fp8_needs_ada_or_hopper_and_names_the_gpu_that_is_older():
    problem = fp8_capability_problem("NVIDIA A100-SXM4-80GB", "80")
    assert problem.startswith("NVIDIA A100-SXM4-80GB has compute capability 8.0") and "8.9 or newer" in problem
    assert fp8_capability_problem("NVIDIA A10", "86") is not None
    for capability in ("89", "90", "100", "120"):
        assert fp8_capability_problem("GPU", capability) is None


def test_a_driver_older_than_cupys_cuda_says_to_reinstall():
    problem = driver_problem(12040, "cupy-cuda13x")
    assert "driver supports CUDA 12.4" in problem and "cupy-cuda13x" in problem
    assert "make clean install" in problem


def test_a_driver_as_new_as_cupys_cuda_is_no_problem():
    assert driver_problem(13000, "cupy-cuda13x") is None
    assert driver_problem(12020, "cupy-cuda12x") is None
    assert driver_problem(13000, "cupy-cuda12x") is None
    assert driver_problem(12040, None) is None
    assert driver_problem(0, "cupy-cuda13x") is None        # no driver at all: another reason

