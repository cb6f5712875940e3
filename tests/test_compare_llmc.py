"""dev/compare_llmc.py's own logic: reading both programs' loss lines, pairing them step by step,
and train_gpt2.py still taking its flags as llm.c's train_gpt2.c run. (Running llm.c itself needs
a checkout the user brings; README's llm.c section has a measured run.)"""
import pytest

from dev.compare_llmc import LLMC_STEPS, LLMPY_FLAGS, Losses, compare
from train_gpt2 import parse_args

LLMC_OUT = """\
[GPT-2]
num_parameters: 124475904
val loss 10.813994
step 0: train loss 10.812592 (took 2817.3 ms)
step 1: train loss 9.694921 (took 2650.0 ms)
val loss 9.000001
step 2: train loss 9.366995 (took 2655.1 ms)
generating:
---
step 3: 4 5
---
"""
LLMPY_OUT = """\
batch: B=4 T=64 | total 256 tokens = 1 micro-steps | train 1,408,515 tokens, shuffled | 3 steps | val 5 batches
val loss 10.813994
step    1/3 | loss 10.812593 | norm 36.1326 | lr 1.00e-04 | 95139.58 ms | 3 tok/s | eta 1h03m
step    2/3 | loss 9.694920 | norm 11.4636 | lr 1.00e-04 | 74256.55 ms | 3 tok/s | eta 48m16s
val loss 9.000010
step    3/3 | loss 9.366995 | norm 12.9348 | lr 1.00e-04 | 70709.38 ms | 4 tok/s | eta 0s
val loss 8.5
done: 3 steps
"""


def losses(text):
    out = Losses()
    for line in text.splitlines():
        out.feed(line)
    return out


def test_both_programs_lines_give_train_losses_in_order_and_val_losses_by_updates_before_them():
    llmc, llmpy = losses(LLMC_OUT), losses(LLMPY_OUT)
    assert llmc.train == [10.812592, 9.694921, 9.366995]       # a sampled "step 3: 4 5" is no loss
    assert llmc.val == {0: 10.813994, 2: 9.000001}
    assert llmpy.train == [10.812593, 9.694920, 9.366995]
    assert llmpy.val == {0: 10.813994, 2: 9.000010, 3: 8.5}


def test_rows_pair_the_steps_and_only_the_val_losses_both_have():
    rows = compare(losses(LLMC_OUT), losses(LLMPY_OUT), 3)
    assert [what for what, *_ in rows] == ["val @ 0", "step 0", "step 1", "val @ 2", "step 2"]
    what, a, b, diff = rows[1]
    assert (a, b) == (10.812592, 10.812593) and diff == pytest.approx(1e-6 / 10.812593)
    assert rows[0][3] == 0.0


def test_train_gpt2_reads_the_flags_as_llmcs_cpu_run():
    args = parse_args(LLMPY_FLAGS + ["-x", str(LLMC_STEPS)])
    assert (args.B, args.T, args.total_batch, args.max_steps, args.device) == (4, 64, 256, 41, "cpu")
    assert (args.schedule, args.lr, args.warmup, args.weight_decay) == ("constant", 1e-4, 0, 0.0)
    assert (args.beta1, args.beta2, args.eps, args.grad_clip) == (0.9, 0.999, 1e-8, 0.0)
    assert (args.shuffle, args.val_every, args.val_batches, args.sample_every) == (1, 10, 5, 0)
