"""Out of memory at start: recognising it on either backend, and `-b auto`'s way out.

`-b auto` builds the model and runs one probe forward/backward at the largest micro-batch
first; on out-of-memory it retries with recompute (-r 1: GELU recomputed in the backward), then
halves the micro-batch, again and again, each time doubling the gradient-accumulation steps so
that the total batch (-d) stays the same. Without `-b auto` an out-of-memory error stops the
run with a line that says which of those options to use.
"""
import gc

from llmpy import LlmpyError

AUTO_START_B = 64     # llm.c's micro-batch for GPT-2 124M at T=1024 on one 80 GB GPU


def is_out_of_memory(e):
    """NumPy's and CuPy's out-of-memory errors are MemoryErrors; cuBLAS and the CUDA runtime
    report theirs as errors with these words."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return any(s in text for s in ("out of memory", "cudaerrormemoryallocation", "cublas_status_alloc_failed"))


def release_memory(ops):
    """Give back what a failed attempt allocated, so the next attempt can have it."""
    gc.collect()
    pool = getattr(ops.xp, "get_default_memory_pool", None)     # CuPy keeps freed blocks cached
    if pool is not None:
        pool().free_all_blocks()


def auto_start_B(micro_rows):
    """-b auto's first micro-batch: the largest divisor of micro_rows (the total batch in
    sequences per process) that is at most AUTO_START_B."""
    return max(b for b in range(1, min(AUTO_START_B, micro_rows) + 1) if micro_rows % b == 0)


def attempts(B, recompute):
    """(B, recompute) pairs to try, in order: as given, with -r 1, then halving B while it is
    even (the total batch must stay a whole number of micro-batches)."""
    yield B, recompute
    r = max(recompute, 1)
    if r != recompute:
        yield B, r
    while B % 2 == 0:
        B //= 2
        yield B, r


def fit(build, B, recompute, release=lambda: None, say=print):
    """build(B, recompute) for each of attempts(B, recompute) until one does not run out of
    memory; returns (what build returned, B, recompute). Other errors pass through."""
    for b, r in attempts(B, recompute):
        try:
            return build(b, r), b, r
        except Exception as e:      # noqa: BLE001 -- only out-of-memory is handled here
            if not is_out_of_memory(e):
                raise
        release()
        say(f"-b auto: out of memory with B={b} -r {r}")
    raise LlmpyError(f"-b auto: out of memory even with B={b} -r {r}; use a smaller model or -t")


def advice(device, B, T, recompute, total_batch, error):
    """The one-line message for an out-of-memory error without -b auto."""
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    more_recompute = {0: "-r 1 (recompute GELU in the backward) or -r 2 (also LayerNorm), ",
                      1: "-r 2 (recompute LayerNorm too), "}.get(recompute, "")
    return (f"out of memory on {device} with -b {B} -t {T} -r {recompute} ({detail}): "
            f"try {more_recompute}a smaller -b with -d {total_batch} to keep the total batch by "
            f"gradient accumulation, or -b auto to let train_gpt2.py choose")
