"""Python imports this at the start of every process a test starts while mutmut collects which
tests reach which function (tests/conftest.py puts this folder first on PYTHONPATH then, and
only then). mutmut records those calls in the process that makes them, so a program run as a
subprocess would reach its functions unseen: this writes the ones it reached to a file when the
process ends, and conftest credits them to the test that started it."""
import atexit
import os
import sys


def _load_mutmut_config():
    """mutmut's trampolines read its setup.cfg from the working folder; a test may start the
    program in another one (test_faults's ranks), so read it here from the mutants' folder."""
    from mutmut.configuration import config
    here = os.getcwd()
    os.chdir(os.environ["LLMPY_MUTMUT_ROOT"])
    try:
        config()
    finally:
        os.chdir(here)


def _report():
    state = sys.modules.get("mutmut.state")
    reached = state.state()._stats if state else ()
    if reached:
        # a program's own functions are __main__'s here; mutmut names them by its module
        program = os.path.splitext(os.path.basename(sys.argv[0]))[0]
        names = (program + name[len("__main__"):] if name.startswith("__main__.") else name for name in reached)
        path = os.path.join(os.environ["LLMPY_MUTMUT_HITS"], f"{os.getpid()}.txt")
        with open(path, "w") as f:
            f.write("\n".join(sorted(names)))


def _exit_reporting(status, _exit=os._exit):
    _report()
    _exit(status)


if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    _load_mutmut_config()
    atexit.register(_report)
    os._exit = _exit_reporting      # how an MPI rank ends on a fault (llmpy/distributed.py)
