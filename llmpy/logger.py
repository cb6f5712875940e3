"""main.log in llm.c's line format (dev/vislog.py reads it):
    s:<step> trl:<train loss> lr:<lr> norm:<grad norm>
    s:<step> tel:<val loss>
"""
import os


class Logger:
    """Appends lines to DIR/main.log; with no DIR it is a no-op. A fresh run truncates the
    log, a resumed one appends to it."""

    def __init__(self, out_dir, resume=False):
        self.path = None
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            self.path = os.path.join(out_dir, "main.log")
            if not resume:
                open(self.path, "w").close()

    def _write(self, line):
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def train(self, step, loss, lr, norm):
        self._write(f"s:{step} trl:{loss:.6f} lr:{lr:.6f} norm:{norm:.4f}")

    def val(self, step, loss):
        self._write(f"s:{step} tel:{loss:.6f}")
