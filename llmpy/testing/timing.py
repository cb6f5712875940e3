"""GPU time of a piece of work, measured with CUDA events."""
import cupy as cp
import numpy as np


def median_ms(fn, repeats=20, warmup=3):
    """Median milliseconds of fn() over `repeats` runs after `warmup` untimed ones. The events are
    recorded on the legacy default stream, which CuPy and PyTorch both launch on unless told
    otherwise, so this times either library's work."""
    for _ in range(warmup):
        fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))
