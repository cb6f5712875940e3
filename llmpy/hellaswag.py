"""HellaSwag (multiple choice: a context and 4 endings) in llm.c's eval-file format, scored as
llm.c's train_gpt2 scores it during training (`-h 1`).

Eval file (llm.c's dev/data/data_common.py write_evalfile, read by llmc/dataloader.h EvalLoader),
little-endian:
    int32[256] header: [0] 20240522, [1] version 1, [2] number of examples,
                       [3] the longest example in bytes, rest 0
    then per example a run of uint16:
        65535 (START_EXAMPLE), the example's length in bytes (these fields included),
        its index in the file, the label (index of the right ending), the number of endings,
        the context's token count and tokens, then per ending its token count and tokens.
dev/data/hellaswag.py writes it from the official jsonl.

Scoring (llm.c's acc_norm, "completion style"): each ending is appended to the context in its
own row; the model's loss at every position that predicts an ending token is averaged over the
ending, and the ending with the lowest mean loss is the model's choice (the first of equals).
The context's own tokens are not scored. Rows are packed B to a forward pass (the 4 endings of
an example in consecutive rows), each pass as long as its longest row.
"""
import math
from dataclasses import dataclass

import numpy as np

from llmpy import LlmpyError
from llmpy.fetch import data_dir
from llmpy.llmc_file import EVAL, HEADER_BYTES, read_header
from llmpy.progress import progress_bar

START_EXAMPLE = 65535
DEFAULT_PATH = str(data_dir() / "hellaswag" / "hellaswag_val.bin")


@dataclass
class Example:
    index: int
    label: int
    context: list          # token ids
    endings: list          # one list of token ids per ending


def read_evalfile(path):
    """All examples of an llm.c eval file, checked field by field; a bad file raises
    LlmpyError naming the file, the example and the fault."""
    header, size = read_header(path, EVAL)
    stream = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES).astype(np.int64)
    count, longest = int(header[2]), int(header[3])
    if count < 1 or (size - HEADER_BYTES) % 2:
        raise LlmpyError(f"eval file {path}: bad header or size: {count} examples, {size} bytes")

    examples, pos, biggest = [], 0, 0
    for i in range(count):
        where = f"eval file {path}: example {i}"
        if pos + 2 > len(stream):
            raise LlmpyError(f"{where}: the file ends early (header says {count} examples; truncated?)")
        if stream[pos] != START_EXAMPLE:
            raise LlmpyError(f"{where}: no START_EXAMPLE marker {START_EXAMPLE} at byte {HEADER_BYTES + 2 * pos}")
        nbytes = int(stream[pos + 1])
        end = pos + nbytes // 2
        if nbytes % 2 or nbytes < 14 or end > len(stream):
            raise LlmpyError(f"{where}: length {nbytes} bytes does not fit the file (truncated?)")
        fields = stream[pos:end]
        index, label, n_endings, ctx_len = (int(x) for x in fields[2:6])
        if index != i:
            raise LlmpyError(f"{where}: carries index {index}")
        if n_endings < 1 or not 0 <= label < n_endings:
            raise LlmpyError(f"{where}: label {label} with {n_endings} endings")
        cursor = 6 + ctx_len
        context = fields[6:cursor].tolist()
        endings = []
        for _ in range(n_endings):
            n = int(fields[cursor]) if cursor < len(fields) else 0
            endings.append(fields[cursor + 1:cursor + 1 + n].tolist())
            cursor += 1 + n
            if n < 1 or cursor > len(fields):
                break
        if ctx_len < 1 or len(context) != ctx_len or cursor != len(fields) or any(len(e) < 1 for e in endings):
            raise LlmpyError(f"{where}: its token counts do not add up to its length of {nbytes} bytes")
        examples.append(Example(index, label, context, endings))
        biggest = max(biggest, nbytes)
        pos = end
    if pos != len(stream):
        raise LlmpyError(f"eval file {path}: {2 * (len(stream) - pos)} bytes after the last of its {count} examples")
    if longest != biggest:
        raise LlmpyError(f"eval file {path}: header says the longest example has {longest} bytes, it has {biggest}")
    return examples


def rank_slice(num_examples, rank, world):
    """The examples process `rank` of `world` scores, as llm.c's EvalLoader splits them."""
    per = math.ceil(num_examples / world)
    return slice(min(rank * per, num_examples), min((rank + 1) * per, num_examples))


def check_fits(examples, T, vocab_size, path="eval file"):
    """Every row (context + ending, less its last token) must fit T, every token the vocabulary."""
    for ex in examples:
        longest = len(ex.context) + max(len(e) for e in ex.endings) - 1
        if longest > T:
            raise LlmpyError(f"{path}: example {ex.index} needs sequences of {longest} tokens, "
                             f"more than -t {T}; train with a longer -t")
        for part, tokens in [("context", ex.context)] + [(f"ending {j}", e) for j, e in enumerate(ex.endings)]:
            bad = next((i for i, t in enumerate(tokens) if t >= vocab_size), None)
            if bad is not None:
                raise LlmpyError(f"{path}: example {ex.index}, {part}: token id {tokens[bad]} at position {bad} "
                                 f"is not in the model's vocabulary of {vocab_size} (ids 0-{vocab_size - 1})")


def ending_losses(model, examples, progress=None, show_progress=False):
    """Mean loss of every ending of every example: a list (per example) of float lists.
    Runs the model forward over rows of at most model.B x model.T tokens, calling progress()
    (if given) before each forward; show_progress: a progress bar."""
    rows = []                       # (example number, ending number, tokens, first scored position)
    for k, ex in enumerate(examples):
        for j, ending in enumerate(ex.endings):
            rows.append((k, j, ex.context + ending, len(ex.context) - 1))
    means = [[0.0] * len(ex.endings) for ex in examples]
    for first in progress_bar(range(0, len(rows), model.B), total=-(-len(rows) // model.B),
                              desc="HellaSwag", unit="batch", show=show_progress):
        chunk = rows[first:first + model.B]
        if progress:
            progress()
        t = max(len(tokens) - 1 for _, _, tokens, _ in chunk)
        inputs = np.zeros((len(chunk), t), dtype=np.int32)
        targets = np.zeros((len(chunk), t), dtype=np.int32)
        for r, (_, _, tokens, _) in enumerate(chunk):
            inputs[r, :len(tokens) - 1] = tokens[:-1]
            targets[r, :len(tokens) - 1] = tokens[1:]
        model.forward(inputs, targets)
        losses = model.ops.to_host(model.acts(len(chunk), t)["losses"]).astype(np.float64)
        for r, (k, j, tokens, start) in enumerate(chunk):
            means[k][j] = float(losses[r, start:len(tokens) - 1].mean())
    return means


def evaluate(model, examples, rank=0, world=1, progress=None):
    """acc_norm counts of this process's share of `examples`: (number right, number scored).
    With several processes, sum both over the ranks. progress() is called before each forward."""
    mine = examples[rank_slice(len(examples), rank, world)]
    if not mine:
        return 0, 0
    means = ending_losses(model, mine, progress, show_progress=rank == 0)
    right = sum(int(np.argmin(m)) == ex.label for ex, m in zip(mine, means))
    return right, len(mine)
