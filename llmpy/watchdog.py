"""The watchdog: a thread that ends the job when training stops making progress.

A lost GPU, a hung filesystem or a collective that another process never joins leaves a run
waiting forever, and the resume loop (scripts/run_gpt2_124M.sh) never gets to restart it. The
training loop calls beat() as it enters each phase (a micro-step's forward and backward, an
all-reduce, the update, an evaluation batch, a checkpoint write); when one phase lasts longer
than its limit, the watchdog prints one line naming the step and what it was waiting for and
aborts every process of the job.

With NCCL (several GPUs), the watchdog also polls the communicator for the errors NCCL itself
detects (a peer's connection lost, a remote process gone), which end the job at once instead of
after the limit; either way it aborts the communicator first, so that no process stays inside a
collective that can never complete.

Limits: `timeout` seconds where given (--watchdog), else 20 times the median step time and at
least 5 minutes. Start-up (until a step has been timed), evaluation, sampling and checkpoint
writes are slow phases: they get at least 15 minutes, for compiling kernels, reading shards
and writing gigabytes.
"""
import collections
import statistics
import sys
import threading
import time

from llmpy import distributed

MULTIPLE, FLOOR_S, SLOW_S = 20, 300.0, 900.0


class Watchdog:
    def __init__(self, timeout=None):
        """timeout: seconds a phase may take (None: from the step times; 0: no watchdog)."""
        self.timeout = timeout
        self.durations = collections.deque(maxlen=100)
        self._phase = (0, "start-up", True, time.monotonic())
        self._stopped = threading.Event()
        self.comm = None
        if timeout != 0:
            threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def beat(self, step, what, slow=False):
        """Step `step` has started `what` (what it will be waiting for if it stalls)."""
        self._phase = (step, what, slow, time.monotonic())     # one tuple: read whole by the thread

    def where(self):
        """The phase now running, as a line says it: "step 12 (the gradient all-reduce)"."""
        step, what, _, _ = self._phase
        return f"step {step} ({what})"

    def step_time(self, seconds):
        self.durations.append(seconds)

    def limit(self, slow):
        if self.timeout:
            limit = self.timeout
        elif self.durations:
            limit = max(FLOOR_S, MULTIPLE * statistics.median(self.durations))
        else:
            limit = SLOW_S
        return max(limit, SLOW_S) if slow or not self.durations else limit

    def guard(self, comm):
        """Also watch comm's collectives (Comm.collective_fault) from now on."""
        self.comm = comm

    def stop(self):
        self._stopped.set()

    def _watch(self):
        while not self._stopped.wait(min(1.0, self.limit(False) / 10)):
            step, what, slow, since = self._phase
            fault = self.comm.collective_fault() if self.comm else None
            idle, limit = time.monotonic() - since, self.limit(slow)
            if fault:
                self._end(f"step {step}: NCCL reports \"{fault}\" while waiting for {what}")
            elif idle > limit:
                self._end(f"step {step} made no progress for {idle:.0f} s while waiting for {what} "
                          f"(limit {limit:.0f} s, --watchdog)")

    def _end(self, why):
        print(f"error: {distributed.rank_prefix()}watchdog: {why}; ending the job", file=sys.stderr)
        if self.comm:
            self.comm.abort_collectives()
        distributed.abort()
