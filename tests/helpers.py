"""The programs as a user runs them, for the tests that check what they print."""
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_program(script, *args, check=True):
    """`python <script> --device cpu ARGS` from the repository's root, a real subprocess."""
    r = subprocess.run([sys.executable, str(ROOT / script), "--device", "cpu", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def path_first(folder, pythonpath):
    """A PYTHONPATH that searches folder first, then pythonpath's folders (if any)."""
    return os.pathsep.join(filter(None, [str(folder), pythonpath]))


def child_env(**variables):
    """The environment of a process that runs the repository's code (mpiexec's ranks, a script
    started from another folder): this one's, with `variables`, and the repository first on
    PYTHONPATH, keeping what was there (under `make mutate`, the folder that runs the mutant)."""
    return {**os.environ, **variables, "PYTHONPATH": path_first(ROOT, os.environ.get("PYTHONPATH"))}


class Terminal(io.StringIO):
    """A stand-in for a terminal: the progress bars (llmpy/progress.py) draw only on one."""
    def isatty(self):
        return True


@contextlib.contextmanager
def terminal():
    """stderr as a terminal inside the block; yields what was written to it. (Not a fixture:
    pytest's capture replaces sys.stderr again when the test's body starts.)"""
    screen = Terminal()
    with contextlib.redirect_stderr(screen):
        yield screen
