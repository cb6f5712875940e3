"""The outlier detector behind -sl / -sg (llm.c's llmc/outlier_detector.h).

It keeps the last `window` values (64, as llm.c) of a measurement — the training loss, or the
gradient norm — and scores each new value by its z-score against the window with the new value
in it: z = (x - mean) / std. Until the window is full the score is NaN (no verdict). A value whose
z-score exceeds the threshold is taken back out of the window, so that outliers do not loosen the
detector, except that the third outlier in a row is kept: a real level shift must not stop
training for ever. The running sum and sum of squares are doubles, updated in place, as llm.c's.

Differences from llm.c, both on paths llm.c does not handle: a non-finite value never enters the
window (it would poison the sums for good; its score is NaN), and taking a value back restores
the ring index modulo the window (llm.c's `(index - 1) % W` goes negative at index 0).
"""
import math

WINDOW = 64


class OutlierDetector:
    def __init__(self, threshold=0.0, window=WINDOW):
        """threshold 0: score only, never take a value back."""
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.threshold, self.window = float(threshold), int(window)
        self.buffer = [0.0] * self.window
        self.count = 0          # values in the window (up to `window`)
        self.index = 0          # next slot to overwrite, once full
        self.skipped_in_a_row = 0
        self.sum = 0.0
        self.sum_sq = 0.0

    def update(self, value):
        """Add `value`, return its z-score (NaN while the window fills or for a non-finite value)."""
        value = float(value)
        if not math.isfinite(value):
            return math.nan
        if self.count < self.window:
            self.buffer[self.count] = value
            self.sum += value
            self.sum_sq += value * value
            self.count += 1
            self.skipped_in_a_row = 0
            return math.nan
        old = self.buffer[self.index]
        self.sum += value - old
        self.sum_sq += value * value - old * old
        self.buffer[self.index] = value
        slot = self.index
        self.index = (self.index + 1) % self.window
        mean = self.sum / self.window
        variance = self.sum_sq / self.window - mean * mean
        std = math.sqrt(variance) if variance > 0 else 0.0
        if std == 0.0:
            return 0.0
        z = (value - mean) / std
        if self.threshold != 0.0 and z > self.threshold:
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row < 3:     # take it back: the window forgets this value
                self.sum += old - value
                self.sum_sq += old * old - value * value
                self.buffer[slot] = old
                self.index = slot
        else:
            self.skipped_in_a_row = 0
        return z

    def state(self):
        """Everything update() depends on, JSON-able (floats round-trip exactly through JSON)."""
        return {"threshold": self.threshold, "window": self.window, "buffer": list(self.buffer),
                "count": self.count, "index": self.index, "skipped_in_a_row": self.skipped_in_a_row,
                "sum": self.sum, "sum_sq": self.sum_sq}

    def load_state(self, d):
        if int(d["window"]) != self.window or len(d["buffer"]) != self.window:
            raise ValueError(f"outlier detector state has window {d['window']}, this one {self.window}")
        self.buffer = [float(x) for x in d["buffer"]]
        self.count, self.index = int(d["count"]), int(d["index"])
        self.skipped_in_a_row = int(d["skipped_in_a_row"])
        self.sum, self.sum_sq = float(d["sum"]), float(d["sum_sq"])
