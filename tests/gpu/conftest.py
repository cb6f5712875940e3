"""GPU tests: run by `make test-gpu`; not collected where CuPy or a GPU is missing (the CPU CI),
and the report header says why."""
try:
    from llmpy import cuda
    REASON = cuda.unavailable_reason()
except ImportError as e:
    REASON = f"the CUDA backend cannot be imported ({e})"


def pytest_ignore_collect(collection_path, config):
    if REASON and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_report_header(config):
    return f"GPU tests: {'skipped: ' + REASON if REASON else 'running'}"
