"""Plot training runs from their main.log files (llmpy's or llm.c's) into one PNG.

    python dev/vislog.py log124M/main.log                        # -> log124M/main.png
    python dev/vislog.py runA/main.log runB/main.log -o cmp.png --labels A,B
    python dev/vislog.py log124M/main.log --ref llmc/main.log    # llm.c's val loss as a reference

Five panels: train loss, val loss, HellaSwag accuracy (with OpenAI GPT-2 124M's 29.4% as a
reference line), learning rate and tokens/s, against the optimizer step. A log line is
`s:<step> key:value ...` (llmpy/logger.py); when a resumed run logged a step twice, the later
line wins. Needs matplotlib (requirements.txt).
"""
import argparse
import math
from pathlib import Path

from llmpy import LlmpyError, run_main

GPT2_124M_HELLASWAG = 29.4     # OpenAI's GPT-2 124M, acc_norm in percent (llm.c's eval)
# (panel title, log key, scale)
PANELS = (("train loss", "trl", 1.0), ("val loss", "tel", 1.0), ("HellaSwag acc_norm (%)", "eval", 100.0),
          ("learning rate", "lr", 1.0), ("tokens/s", "tps", 1.0))


def parse_log(path):
    """{key: {step: value}} from a main.log. Lines that are not `s:<int> key:<float> ...` (a
    line torn by a crash) are skipped; a file with no such line at all is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise LlmpyError(f"log {path}: cannot read: {e.strerror}") from None
    streams = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].startswith("s:"):
            continue
        try:
            step = int(fields[0][2:])
            pairs = [f.split(":", 1) for f in fields[1:]]
            values = {key: float(value) for key, value in pairs}
        except ValueError:
            continue
        for key, value in values.items():
            streams.setdefault(key, {})[step] = value
    if not streams:
        raise LlmpyError(f"log {path}: no `s:<step> key:value` lines; is this a main.log?")
    return streams


def series(stream, scale=1.0):
    steps = sorted(stream)
    return steps, [stream[s] * scale for s in steps]


def smooth(values, alpha):
    """Exponential moving average with bias correction (0 < alpha < 1; 0: none)."""
    if not alpha:
        return values
    out, ema = [], 0.0
    for i, v in enumerate(values, 1):
        ema = alpha * ema + (1 - alpha) * v
        out.append(ema / (1 - alpha ** i))
    return out


def plot(logs, labels, out, ref=None, smoothing=0.0):
    fig = figure(logs, labels, ref, smoothing)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    import matplotlib.pyplot as plt
    plt.close(fig)


def figure(logs, labels, ref=None, smoothing=0.0):
    """The five panels against the step, and a sixth with each run's summary."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    axes = axes.ravel()
    colors = [f"C{i}" for i in range(len(logs))]     # a run keeps its colour in every panel
    for ax, (title, key, scale) in zip(axes, PANELS):
        for streams, label, color in zip(logs, labels, colors):
            if key in streams:
                steps, values = series(streams[key], scale)
                if key == "trl":
                    values = smooth(values, smoothing)
                ax.plot(steps, values, label=label, color=color)
        if key == "eval":
            ax.axhline(GPT2_124M_HELLASWAG, color="red", linestyle="--", label="OpenAI GPT-2 124M (29.4)")
        if key == "tel" and ref is not None and "tel" in ref:
            steps, values = series(ref["tel"])
            ax.plot(steps, values, color="gray", linestyle="--", label="llm.c")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lo, hi = ax.get_xlim()
        if hi - lo < 2:                 # one step alone: a range whole-number ticks can mark
            ax.set_xlim((lo + hi) / 2 - 1, (lo + hi) / 2 + 1)
        ax.ticklabel_format(axis="y", useOffset=False)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    runs = axes[len(PANELS)]            # the last panel: each run's summary line, in its colour
    runs.axis("off")
    runs.set_title("runs")
    for i, (streams, label, color) in enumerate(zip(logs, labels, colors)):
        runs.text(0.0, 1.0 - 0.12 * i, summary(streams, label).replace(" | ", "\n  "), color=color,
                  va="top", ha="left", fontsize="small", transform=runs.transAxes)
    fig.tight_layout()
    return fig


def summary(streams, label):
    """One line per run: the last train and val loss, the best HellaSwag."""
    parts = [label]
    for key, name in (("trl", "train loss"), ("tel", "val loss")):
        if key in streams:
            step = max(streams[key])
            parts.append(f"{name} {streams[key][step]:.4f} at step {step}")
    if "eval" in streams:
        best = max(streams["eval"].values())
        if not math.isnan(best):
            parts.append(f"best HellaSwag {100 * best:.1f}%")
    return " | ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description="plot main.log files into a PNG")
    p.add_argument("logs", nargs="+", help="main.log files")
    p.add_argument("-o", "--out", help="the PNG to write (default: next to the first log)")
    p.add_argument("--labels", help="comma-separated names of the runs (default: their folders)")
    p.add_argument("--ref", help="a reference main.log (llm.c's) whose val loss is drawn dashed")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA factor for the train loss, 0..1 (0: none)")
    args = p.parse_args(argv)
    if not 0 <= args.smooth < 1:
        raise LlmpyError(f"--smooth {args.smooth}: must be in [0, 1)")
    labels = args.labels.split(",") if args.labels else [Path(log).parent.name or log for log in args.logs]
    if len(labels) != len(args.logs):
        raise LlmpyError(f"--labels: {len(labels)} names for {len(args.logs)} logs")
    logs = [parse_log(log) for log in args.logs]
    ref = parse_log(args.ref) if args.ref else None
    out = args.out or str(Path(args.logs[0]).with_suffix(".png"))
    plot(logs, labels, out, ref, args.smooth)
    for streams, label in zip(logs, labels):
        print(summary(streams, label))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_main(main)
