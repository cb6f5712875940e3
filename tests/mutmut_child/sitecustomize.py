"""Python imports this at the start of every process a test starts under mutmut (tests/conftest.py
puts this folder first on PYTHONPATH then, and only then). It makes a program run as a subprocess
(train_gpt2.py) count as the module it is:
- while mutmut collects which tests reach which function, mutmut records the calls in the process
  that makes them: this writes the ones this process reached to a file when it ends, and conftest
  credits them to the test that started it;
- while a mutant runs, mutmut names it by the program's module (train_gpt2.x_train_loop__mutmut_4),
  but here the program's functions are __main__'s: the name is changed to match, so that the
  mutant runs in the subprocess too.
"""
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
        names = (_program + name[len("__main__"):] if name.startswith("__main__.") else name for name in reached)
        path = os.path.join(os.environ["LLMPY_MUTMUT_HITS"], f"{os.getpid()}.txt")
        with open(path, "w") as f:
            f.write("\n".join(sorted(names)))


def _exit_reporting(status, _exit=os._exit):
    _report()
    _exit(status)


_program = os.path.splitext(os.path.basename(sys.argv[0]))[0] if sys.argv and sys.argv[0] else ""
_mutant = os.environ.get("MUTANT_UNDER_TEST", "")
if _mutant == "stats":
    _load_mutmut_config()
    atexit.register(_report)
    os._exit = _exit_reporting      # how an MPI rank ends on a fault (llmpy/distributed.py)
elif _program and _mutant.startswith(_program + "."):
    os.environ["MUTANT_UNDER_TEST"] = "__main__" + _mutant[len(_program):]
