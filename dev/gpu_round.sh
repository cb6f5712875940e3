#!/usr/bin/env bash
# One GPU round on the device machine, every check this project makes there, logs under $OUT
# (default ./gpu_round_out): bash dev/gpu_round.sh [sections...]
#   tests      make test-gpu: every kernel against NumPy, the bf16 model against PyTorch
#   resume     train d12 with checkpoints, resume from the middle, sample, plot main.log
#   multigpu   dev/multigpu.py on every GPU: equality with one GPU, scaling (d12, then d48 -r 1)
#   kernels    the dev/cuda scripts: each kernel family's versions checked and timed
#   bench      dev/bench.py at B=64 (with PyTorch) and B=8
#   sizes      d24 (350M) at B=32, and d48 (1.5B) at B=32 with -r 1: tokens/s and MFU
# Needs the Shakespeare shards and the tokenizer cache in dev/data (carry them).
set -u
OUT=${OUT:-gpu_round_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
GPUS=$(nvidia-smi -L | wc -l)
sections=${*:-tests resume multigpu kernels bench sizes}
summary=()

for s in $sections; do
  case $s in
  tests)
    timeout 300 make test-gpu SYSTEM_PYTHON=1 > "$OUT/test_gpu.log" 2>&1
    summary+=("test-gpu (rc $?): $(grep -E 'passed|failed' "$OUT/test_gpu.log" | tail -1)") ;;
  resume)
    run=/tmp/llmpy_resume_run; rm -rf "$run"      # checkpoints: GBs, not for $OUT
    flags="-e d12 -b 16 -t 1024 -x 20 -v 10 -m 2 -s 20 -g 48 -n 10 -o $run"
    { timeout 200 python3 train_gpt2.py $flags && rm "$run/DONE_00000020" &&
      timeout 200 python3 train_gpt2.py $flags -y 1; } > "$OUT/resume.log" 2>&1
    rc=$?
    cp "$run/main.log" "$OUT/main.log"
    timeout 100 python3 dev/vislog.py -o "$OUT/run.png" "$run/main.log" >> "$OUT/resume.log" 2>&1
    # steps 11..20 of the run that never stopped, then of the resumed run: the same lines
    same=$(grep -E '^step +(1[1-9]|20)/' "$OUT/resume.log" | sed -E 's/ \| [0-9.]+ ms.*//' | sort | uniq -c | awk '$1 != 2' | wc -l)
    summary+=("resume (rc $rc): steps 11-20 differing between the full and the resumed run: $same") ;;
  multigpu)
    if [ "$GPUS" -gt 1 ]; then
      timeout 280 python3 dev/multigpu.py --gpus "$GPUS" > "$OUT/multigpu.log" 2>&1
      summary+=("multigpu d12 (rc $?)")
      timeout 280 python3 dev/multigpu.py --gpus "$GPUS" --model d48 --B 8 --check_B 2 --recompute 1 --steps 12 >> "$OUT/multigpu.log" 2>&1
      summary+=("multigpu d48 (rc $?)")
    fi ;;
  kernels)
    for family in "attention 4 7 10 12 13" matmul layernorm classifier adamw elementwise; do
      set -- $family
      echo "== python3 dev/cuda/$*" >> "$OUT/kernels.log"
      timeout 150 python3 dev/cuda/$1.py "${@:2}" > /tmp/dev_kernel.log 2>&1
      rc=$?
      cat /tmp/dev_kernel.log >> "$OUT/kernels.log"
      summary+=("dev/cuda/$1.py (rc $rc): $(grep -c FAIL /tmp/dev_kernel.log) checks failed")
    done ;;
  sizes)
    timeout 150 python3 dev/bench.py --model d24 --B 32 --steps 15 --no-torch > "$OUT/sizes.log" 2>&1
    summary+=("bench d24 B=32 (rc $?)")
    timeout 240 python3 train_gpt2.py -e d48 -b 32 -t 1024 -r 1 -x 12 -v 0 -s 0 >> "$OUT/sizes.log" 2>&1
    summary+=("train d48 B=32 -r 1 (rc $?): $(grep -E '^step +12/' "$OUT/sizes.log")") ;;
  bench)
    timeout 240 python3 dev/bench.py --steps 30 --profile > "$OUT/bench.log" 2>&1
    summary+=("bench B=64 (rc $?)")
    timeout 120 python3 dev/bench.py --B 8 --steps 50 --no-torch > "$OUT/bench_b8.log" 2>&1
    summary+=("bench B=8 (rc $?)") ;;
  esac
done

echo "== $GPUS GPU(s): $(nvidia-smi -L | head -1)"
for line in "${summary[@]}"; do echo "$line"; done
[ -f "$OUT/multigpu.log" ] && grep -E "largest|GPUs \||^ +[0-9]+ \| +[0-9,]+ \||^d[0-9]+" "$OUT/multigpu.log"
[ -f "$OUT/bench.log" ] && tail -4 "$OUT/bench.log"
[ -f "$OUT/bench_b8.log" ] && tail -3 "$OUT/bench_b8.log"
[ -f "$OUT/sizes.log" ] && grep -A3 "^system" "$OUT/sizes.log"
