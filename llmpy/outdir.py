"""The output folder (-o) belongs to one run: made and checked before anything is built,
locked while the run writes into it, and refused to a fresh run where another run left its
checkpoints or its main.log.

The lock is an fcntl lock on <out>/.llmpy.lock, which names the process holding it; the
operating system releases it when that process ends, however it ends.
"""
import fcntl
import os
import re
import socket

from llmpy import LlmpyError

LOCK_NAME = ".llmpy.lock"
CHECKPOINT_NAME = re.compile(r"model_\d{8}\.bin|state_\d{8}_\d{5}\.bin|DONE_(\d{8})")


def make(path):
    """-o: a folder this process can write, made where missing."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise LlmpyError(f"-o {path}: exists and is not a folder") from None
    except OSError as e:
        raise LlmpyError(f"-o {path}: cannot make the folder: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LlmpyError(f"-o {path}: the folder is not writable")


def lock(path, say):
    """Lock the folder for this process; returns the open lock file, which holds the lock for as
    long as it stays open. Another run holding it is one line naming its process. A filesystem
    without locks (some network filesystems) gets a line saying so, and no lock."""
    lock_path = os.path.join(path, LOCK_NAME)
    f = open(lock_path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise LlmpyError(f"-o {path}: another run is writing into this folder ({holder} holds {lock_path})") from None
    except OSError as e:
        f.close()
        say(f"-o {path}: cannot lock {lock_path} ({e.strerror}): nothing stops a second run from writing here")
        return None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def check_fresh(path):
    """A fresh run (no -y 1) must not write over another run's checkpoints or main.log."""
    names = os.listdir(path)
    found = []
    complete = sorted(int(m[1]) for m in map(CHECKPOINT_NAME.fullmatch, names) if m and m[1])
    if complete:
        found.append(f"checkpoints of steps {', '.join(map(str, complete))}")
    elif any(CHECKPOINT_NAME.fullmatch(n) for n in names):
        found.append("incomplete checkpoint files")
    if "main.log" in names:
        found.append("a main.log")
    if found:
        raise LlmpyError(f"-o {path}: holds another run's {' and '.join(found)}; resume that run with -y 1, "
                         "or write this one into another folder")
