"""A test-only fault switch, for the fault tests: the environment variable
LLMPY_FAULT=stall:step=3:rank=1 makes process 1 sleep (an hour, or seconds=N) inside training
step 3, as a lost GPU or a hung filesystem stalls a real run. Nothing else sets it."""
import os
import time

from llmpy import LlmpyError

VARIABLE = "LLMPY_FAULT"


class Fault:
    def __init__(self, spec):
        kind, *fields = spec.split(":")
        try:
            values = {k: int(v) for k, v in (f.split("=") for f in fields)}
        except ValueError:
            values = None
        if kind != "stall" or values is None or not {"step", "rank"} <= values.keys() <= {"step", "rank", "seconds"}:
            raise LlmpyError(f"{VARIABLE}={spec}: expected stall:step=S:rank=R[:seconds=N]")
        self.step, self.rank, self.seconds = values["step"], values["rank"], values.get("seconds", 3600)

    def inside_step(self, step, rank):
        if (step, rank) == (self.step, self.rank):
            time.sleep(self.seconds)


def from_environment():
    """The fault LLMPY_FAULT asks for, or None."""
    spec = os.environ.get(VARIABLE)
    return Fault(spec) if spec else None
