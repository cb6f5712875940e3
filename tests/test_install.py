"""make install's choice of GPU build, read from the CUDA version the NVIDIA driver supports,
with a fake nvidia-smi on PATH: CUDA 12.x gets cupy-cuda12x with CUDA 12's libraries, 13.x
cupy-cuda13x with 13's, no GPU nothing, a driver older than CUDA 12 one line saying what is
needed. The two GPU requirement files are resolved against the package index (no download of the
wheels themselves) to show that they bring CUDA's toolkit libraries and NCCL."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fake_nvidia_smi(folder, cuda_version, gpus=("NVIDIA A100-SXM4-80GB",)):
    """An nvidia-smi that prints a header with this CUDA version and lists these GPUs (-L)."""
    folder.mkdir(exist_ok=True)
    listing = "".join(f'echo "GPU {i}: {name} (UUID: GPU-{i})"; ' for i, name in enumerate(gpus))
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "-L" ]; then {listing}exit 0; fi\n'
                      f'echo "| NVIDIA-SMI 999.1    Driver Version: 999.1    CUDA Version: {cuda_version}     |"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:/usr/bin:/bin"}


def no_nvidia_smi():
    return {**os.environ, "PATH": "/usr/bin:/bin"}


def gpu_build(env):
    return subprocess.run(["sh", "scripts/gpu_build.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30).stdout.strip()


@pytest.mark.parametrize("cuda, build", [("12.4", "cu12"), ("12.0", "cu12"), ("13.0", "cu13"),
                                         ("13.2", "cu13"), ("14.1", "cu13"), ("11.8", "old-11.8")])
def test_driver_cuda_version_picks_the_gpu_build(tmp_path, cuda, build):
    assert gpu_build(fake_nvidia_smi(tmp_path / "bin", cuda)) == build


def test_no_nvidia_smi_is_a_cpu_machine():
    assert gpu_build(no_nvidia_smi()) == "cpu"


def test_nvidia_smi_listing_no_gpu_is_a_cpu_machine(tmp_path):
    assert gpu_build(fake_nvidia_smi(tmp_path / "bin", "12.4", gpus=())) == "cpu"


def make_install_commands(env, venv):
    r = subprocess.run(["make", "-n", "install", f"VENV={venv}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return next(line.rstrip() for line in r.stdout.splitlines() if "-r requirements.txt" in line)


@pytest.mark.parametrize("cuda, requirements", [("12.4", "requirements-gpu-cu12.txt"),
                                                ("13.0", "requirements-gpu-cu13.txt")])
def test_make_install_adds_the_requirements_of_the_driver(tmp_path, cuda, requirements):
    pip = make_install_commands(fake_nvidia_smi(tmp_path / "bin", cuda), tmp_path / "venv")
    assert pip.endswith(f"-r requirements.txt -r {requirements}")


def test_make_install_on_a_cpu_machine_adds_no_gpu_requirements(tmp_path):
    pip = make_install_commands(no_nvidia_smi(), tmp_path / "venv")
    assert pip.endswith("-r requirements.txt")


def test_make_install_refuses_a_driver_older_than_cuda_12_in_one_line(tmp_path):
    venv = tmp_path / "venv"
    r = subprocess.run(["make", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=fake_nvidia_smi(tmp_path / "bin", "11.4"))
    assert r.returncode != 0
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "CUDA 11.4" in error[0] and "CUDA 12 or newer" in error[0]
    assert not venv.exists()


def resolve(requirements, tmp_path):
    """{name: version} that pip would install for a requirements file (the package index's
    metadata only; PyTorch's own index, unreachable from CI, left out)."""
    lines = [line for line in (ROOT / requirements).read_text().splitlines()
             if not line.startswith("--")]
    (tmp_path / "reqs.txt").write_text("\n".join(lines))
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run",
                        "--ignore-installed", "--report", str(report), "-r", str(tmp_path / "reqs.txt")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return {p["metadata"]["name"].lower(): p["metadata"]["version"]
            for p in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("cuda", ["12", "13"])
def test_gpu_requirements_bring_cuda_libraries_and_nccl(tmp_path, cuda):
    suffix = "-cu12" if cuda == "12" else ""
    packages = resolve(f"requirements-gpu-cu{cuda}.txt", tmp_path)
    assert packages[f"cupy-cuda{cuda}x"] == "14.2.0"
    assert packages["cuda-toolkit"].startswith(f"{cuda}.")
    for library in ("nvidia-cuda-nvrtc", "nvidia-cublas", "nvidia-cuda-runtime"):
        assert packages[library + suffix].startswith(f"{cuda}.")
    assert f"nvidia-nccl-cu{cuda}" in packages


def offline_env(*args, env=None):
    return subprocess.run(["sh", "scripts/offline_env.sh", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_offline_environment_installs_from_downloaded_wheels_alone(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tiktoken==0.14.0\n")
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    r = offline_env("download", wheels, python, requirements)
    assert r.returncode == 0, r.stderr
    # no package index and no pip configuration (which may name local wheel folders) to fall back on
    r = offline_env("install", wheels, venv, requirements,
                    env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stderr
    r = subprocess.run([venv / "bin" / "python", "-c", "import tiktoken; print(tiktoken.__version__)"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "0.14.0", r.stderr


def test_offline_environment_without_its_wheels_is_a_one_line_error(tmp_path):
    r = offline_env("install", tmp_path / "none", tmp_path / "venv", ROOT / "requirements.txt")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'none'}: no such folder of wheels"


def fake_python(folder, version):
    """A python3 that runs `-c CODE` as if it were Python `version` (its sys.version_info)."""
    folder.mkdir(exist_ok=True)
    major, minor = version.split(".")
    script = folder / "python-fake"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -c "import sys; sys.version_info = '
                      f'({major}, {minor}, 0); exec(sys.argv[1])" "$2"\n')
    script.chmod(0o755)
    return script


def test_make_install_refuses_a_python_older_than_3_11_in_one_line(tmp_path):
    python = fake_python(tmp_path / "bin", "3.10")
    r = subprocess.run(["make", "install", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}"], cwd=ROOT,
                       env=no_nvidia_smi(), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"error: llmpy needs Python 3.11 or newer; {python} is 3.10" in r.stderr
    assert not (tmp_path / "venv").exists()


def test_a_venv_installed_by_another_python_is_installed_anew(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed-cpu-py3.9").touch()
    make = ["make", f"VENV={venv}", f"PYTHON={sys.executable}", "install"]
    r = subprocess.run([*make, "-n"], cwd=ROOT, env=no_nvidia_smi(), capture_output=True, text=True,
                       timeout=60)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"touch {venv}/.installed-cpu-py{python}" in r.stdout
    (venv / f".installed-cpu-py{python}").touch()
    r = subprocess.run([*make, "-q"], cwd=ROOT, env=no_nvidia_smi(), timeout=60)
    assert r.returncode == 0            # up to date once this Python's stamp is there


def test_a_cpu_machine_asks_pytorchs_cpu_index_for_torch_first(tmp_path):
    r = subprocess.run(["make", "-n", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                       env=no_nvidia_smi(), capture_output=True, text=True, timeout=60)
    torch_line = next(line for line in r.stdout.splitlines() if "download.pytorch.org/whl/cpu" in line)
    pinned = next(line for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.startswith("torch=="))
    assert f'"{pinned}+cpu"' in torch_line and "--no-deps" in torch_line
    assert r.stdout.index(torch_line) < r.stdout.index("-r requirements.txt")


def test_installed_package_carries_its_kernels_and_imports_from_anywhere(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    packaged = sorted(p.name for p in (site / "llmpy" / "kernels").iterdir())
    assert packaged == sorted(p.name for p in (ROOT / "kernels").iterdir())
    # llmpy.testing too: dev/bench.py and dev/cuda import it from an installed llmpy
    r = subprocess.run([sys.executable, "-c", "import llmpy.testing.compare, llmpy.kernel_options as k; "
                        "print(k.KERNEL_DIR)"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == str(site / "llmpy" / "kernels"), r.stderr
