#!/usr/bin/env bash
# GPT-2 (124M) reproduction on FineWeb 10B: llm.c's recipe (its scripts/run_gpt2_124M.sh).
# 124M parameters, 18,865 steps of 524,288 tokens = 9.9B tokens; AdamW lr 6e-4, warmup 700,
# cosine to 0, weight decay 0.1; val loss and HellaSwag every 250 steps; a checkpoint every
# 1000 steps (the newest 2 kept, every 5000th for good). If the run stops (a crash, a lost
# node), the loop resumes it from the newest complete checkpoint with -y 1.
#
#   scripts/run_gpt2_124M.sh        # every GPU nvidia-smi lists (8 on an 8xH100/H200 node)
#   scripts/run_gpt2_124M.sh 1      # one GPU: the same total batch by gradient accumulation
#
# Before: python dev/data/fineweb.py --version 10B   (the FineWeb shards)
#         python dev/data/hellaswag.py                (the HellaSwag eval file)
# Environment: OUT (log folder, default log_gpt2_124M), DATA (shard folder, default
# dev/data/fineweb10B), HELLASWAG (eval file, default dev/data/hellaswag/hellaswag_val.bin),
# PYTHON, MAX_STALLS (runs in a row that may end without a new checkpoint before the loop gives
# up, default 3), RETRY_SLEEP (seconds before resuming, default 10), DRY_RUN=1 (print the
# command and stop).
# Out of memory? Add -r 1, or use -b auto (README: Memory).
set -euo pipefail
cd "$(dirname "$0")/.."

NGPU=${1:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}
NGPU=${NGPU:-1}; [ "$NGPU" -ge 1 ] || NGPU=1
OUT=${OUT:-log_gpt2_124M}
DATA=${DATA:-dev/data/fineweb10B}
HELLASWAG=${HELLASWAG:-dev/data/hellaswag/hellaswag_val.bin}
PYTHON=${PYTHON:-python}
MAX_STALLS=${MAX_STALLS:-3}
RETRY_SLEEP=${RETRY_SLEEP:-10}
STEPS=18865

ARGS=(-i "$DATA/fineweb_train_*.bin" -j "$DATA/fineweb_val_*.bin"
      -o "$OUT" -e d12
      -b 64 -t 1024 -d 524288 -r 0 -z 1
      -l 0.0006 -u 700 -q 0.0 -k cosine -c 0.1 -x "$STEPS"
      -v 250 -m 20 -h 1 --hellaswag "$HELLASWAG" -s 20000 -g 144
      -n 1000 -nk 2 -nm 5000 -y 1)
if [ "$NGPU" -gt 1 ]; then
    LAUNCH=(mpirun -np "$NGPU" "$PYTHON" train_gpt2.py)
else
    LAUNCH=("$PYTHON" train_gpt2.py)
fi

if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${LAUNCH[@]}" "${ARGS[@]}"; echo
    exit 0
fi
if ! compgen -G "$DATA/fineweb_train_*.bin" >/dev/null; then
    echo "no FineWeb shards in $DATA/: run python dev/data/fineweb.py --version 10B" >&2
    exit 1
fi
if [ ! -f "$HELLASWAG" ]; then
    echo "no HellaSwag eval file $HELLASWAG: run python dev/data/hellaswag.py" >&2
    exit 1
fi

newest() {    # the newest DONE marker (zero-padded names: the glob's order is the steps' order)
    local f last=""
    for f in "$OUT"/DONE_*; do [ -e "$f" ] && last=$f; done
    echo "$last"
}
done_file=$(printf '%s/DONE_%08d' "$OUT" "$STEPS")
stalls=0
while [ ! -f "$done_file" ]; do
    before=$(newest)
    if "${LAUNCH[@]}" "${ARGS[@]}"; then status=0; else status=$?; fi
    [ -f "$done_file" ] && break
    if [ "$(newest)" = "$before" ]; then stalls=$((stalls + 1)); else stalls=0; fi
    if [ "$stalls" -ge "$MAX_STALLS" ]; then
        echo "training stopped (status $status) $stalls times in a row without a new checkpoint; giving up" >&2
        exit 1
    fi
    echo "training stopped (status $status); resuming from the newest checkpoint in $OUT in ${RETRY_SLEEP} s" >&2
    sleep "$RETRY_SLEEP"
done
echo "done: $done_file; plot it with python dev/vislog.py $OUT/main.log"
