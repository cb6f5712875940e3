"""Learning-rate schedules, as llm.c's schedulers.h: linear warmup over `warmup` steps, then
the schedule's decay from max_lr down to max_lr * final_frac at step `total`."""
import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def learning_rate(schedule, step, max_lr, warmup, total, final_frac):
    """Learning rate of 0-based `step` of `total`."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    min_lr = max_lr * final_frac
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    if schedule == "linear":
        return max_lr - progress * (max_lr - min_lr)
    if schedule == "constant":
        return max_lr
    if schedule == "wsd":
        # warmup-stable-decay: constant, then a linear cooldown over the last 20% of steps
        cooldown_start = int(0.8 * total)
        if step < cooldown_start:
            return max_lr
        return max_lr - (step - cooldown_start) / max(1, total - cooldown_start) * (max_lr - min_lr)
    raise ValueError(f"unknown schedule {schedule!r}")
