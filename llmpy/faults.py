"""A test-only fault switch, for the fault tests: the environment variable
LLMPY_FAULT=stall:step=3:rank=1 makes process 1 sleep (an hour, or seconds=N) inside training
step 3, as a lost GPU or a hung filesystem stalls a real run; with at=checkpoint it sleeps in
the middle of checkpoint 3's write instead (after the model file, before the state file), where
a test can kill it. Nothing else sets it."""
import os
import time

from llmpy import LlmpyError

VARIABLE = "LLMPY_FAULT"
PLACES = ("step", "checkpoint")


class Fault:
    def __init__(self, spec):
        kind, *fields = spec.split(":")
        try:
            values = dict(f.split("=") for f in fields)
            step, rank, seconds = int(values.pop("step")), int(values.pop("rank")), int(values.pop("seconds", 3600))
            at = values.pop("at", "step")
        except (ValueError, KeyError):
            values = None
        if kind != "stall" or values is None or values or at not in PLACES:
            raise LlmpyError(f"{VARIABLE}={spec}: expected stall:step=S:rank=R[:seconds=N][:at=step|checkpoint]")
        self.step, self.rank, self.seconds, self.at = step, rank, seconds, at

    def reached(self, place, step, rank):
        if (place, step, rank) == (self.at, self.step, self.rank):
            time.sleep(self.seconds)


def from_environment():
    """The fault LLMPY_FAULT asks for, or None."""
    spec = os.environ.get(VARIABLE)
    return Fault(spec) if spec else None
