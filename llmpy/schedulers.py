"""Learning-rate schedules, with llm.c's definitions (llmc/schedulers.h), for 0-based `step` of
`total` steps, peak rate max_lr and min_lr = max_lr * final_frac:

    cosine    linear warmup over `warmup` steps (step+1)/warmup * max_lr, then
              min_lr + (1 + cos(pi * r)) / 2 * (max_lr - min_lr),  r = (step - warmup) / (total - warmup)
    linear    the same warmup, then max_lr - r * (max_lr - min_lr)
    constant  max_lr at every step (llm.c's constant schedule has no warmup)
    wsd       warmup-stable-decay (arXiv 2405.18392): the same warmup, max_lr until the decay
              point d = int(0.8 * total), then min_lr + (1 - sqrt(s)) * (max_lr - min_lr),
              s = (step - d) / (total - d)

r and s stay below 1 for step < total, so the last step's rate is just above min_lr, as in llm.c.
llm.c computes in fp32; this is the same arithmetic in double precision.
"""
import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def learning_rate(schedule, step, max_lr, warmup, total, final_frac):
    """Learning rate of 0-based `step` of `total`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return max_lr
    if step < warmup:
        return max_lr * (step + 1) / warmup
    min_lr = max_lr * final_frac
    if schedule == "wsd":
        decay_point = int(0.8 * total)
        if step < decay_point:
            return max_lr
        progress = (step - decay_point) / max(1, total - decay_point)
        return min_lr + (1.0 - math.sqrt(progress)) * (max_lr - min_lr)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return max_lr - progress * (max_lr - min_lr)     # linear
