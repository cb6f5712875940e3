"""main.log in llm.c's line format (dev/vislog.py reads it), one `key:value` pair per field:

    s:<step> trl:<train loss> lr:<lr> norm:<grad norm> dt:<ms> tps:<tokens/s>
    s:<step> tel:<val loss>
    s:<step> eval:<HellaSwag acc_norm, a fraction>
    s:<step> skip_lossz:<z>          (or skip_gradz: the outlier guard skipped this update)

llm.c writes the first three fields of a train line; dt and tps are ours (vislog's tokens/s).
<step> counts optimizer steps done: a train line says s:1 after the first update, and val and
HellaSwag lines are evaluated before the update that follows them.

Also here: the ETA of the progress display.
"""
import os
import re

STEP = re.compile(r"s:(\d+) ")


class Logger:
    """Appends lines to DIR/main.log; with no DIR it is a no-op. A fresh run truncates the
    log; a run resumed from the checkpoint of step k keeps the lines up to step k and drops
    the rest (written after that checkpoint by the run that stopped), so that the resumed log
    reads as if the run had never stopped. Only one process (rank 0) should log."""

    def __init__(self, out_dir, resume_step=None):
        self.path = None
        if not out_dir:
            return
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "main.log")
        kept = []
        if resume_step is not None and os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    m = STEP.match(line)
                    if m and line.endswith("\n") and int(m[1]) <= resume_step:
                        kept.append(line)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def _write(self, line):
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def train(self, step, loss, lr, norm, ms=None, tokens_per_s=None):
        line = f"s:{step} trl:{loss:.6f} lr:{lr:.6e} norm:{norm:.4f}"
        if ms is not None:
            line += f" dt:{ms:.2f} tps:{tokens_per_s:.0f}"
        self._write(line)

    def val(self, step, loss):
        self._write(f"s:{step} tel:{loss:.6f}")

    def eval(self, step, accuracy):
        self._write(f"s:{step} eval:{accuracy:.6f}")

    def skipped(self, step, what, z):
        """The outlier guard skipped the update of `step`: what is "loss" or "grad"."""
        self._write(f"s:{step} skip_{what}z:{z:.4f}")


def format_eta(seconds):
    """Remaining time as the progress display shows it: 42s, 12m05s, 1h02m, 2d03h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
