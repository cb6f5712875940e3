#!/usr/bin/env bash
# One GPU round on the device machine, every check this project makes there, logs under $OUT
# (default ./gpu_round_out): bash dev/gpu_round.sh [sections...]
#   tests      make test-gpu: every kernel against NumPy, the bf16 model against PyTorch
#   emulate    make test-gpu as an A100 (mma.sync, compute_80 PTX, 163 KB) and as an RTX 4090/L4
#              would run it (the same at 99 KB): the switches of tests/gpu/conftest.py
#   emubench   dev/bench.py on those two paths beside the Hopper path, B=64 and B=8
#   quality    d12 B=64 40 steps on Shakespeare (lr 6e-4, warmup 10, wd 0.1): step-40 val loss
#   sample     sample_gpt2.py: tokens/s with and without the key/value cache (d12), and the GPU's
#              greedy tokens against the CPU's from the quality run's checkpoint
#   faults     one process on the GPU: a bad token id, a stalled step (the watchdog), -b auto and
#              the out-of-memory line on d48
#   debug      dev/debug_model.py --compare: d12's per-layer norms on the CPU (fp32) and GPU (bf16)
#   arch       dev/bench.py on the tree before the architecture step (.carry/before, made by
#              `git archive before-architecture | tar -x -C .carry/before`) and on this one,
#              alternating, three runs each
#   resume     train d12 with checkpoints, resume from the middle, sample, plot main.log
#   multigpu   dev/multigpu.py on every GPU: equality with one GPU, scaling (d12, then d48 -r 1)
#   overlap    (not in the default list; needs 2+ GPUs) --overlap 0 against 1 on every GPU over
#              NVLink, then the all-reduce's bus bandwidth over NCCL's sockets on loopback at three
#              settings, and --overlap 0 against 1 over the slowest of them
#   rankfault  (needs 2+ GPUs) one rank of a d12 job on every GPU killed (SIGKILL) in step 4, and one
#              stalled under --watchdog 30: seconds until the launcher returns, and the lines
#   kernels    the dev/cuda scripts: each kernel family's versions checked and timed
#   bench      dev/bench.py at B=64 (with PyTorch) and B=8
#   sizes      d24 (350M) at B=32 and d36 (774M) at B=16 beside PyTorch compile, with the GPU's
#              timeline; d48 (1.5B) at B=32 with -r 1: tokens/s and MFU
#   fp8        the FP8 GPU tests, dev/cuda/fp8_cast.py (the cast-transpose against a bf16 copy) and
#              dev/cuda/fp8.py (the FP8 products of d12's matmuls checked and timed against bf16);
#              `bench` runs --fp8 1 beside bf16 on FP8 GPUs
# Needs the Shakespeare shards and the tokenizer cache in dev/data (carry them).
set -u
OUT=${OUT:-gpu_round_out}
mkdir -p "$OUT"; rm -f "$OUT/summary.txt"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
# the system's python3 runs the scripts, llmpy not installed: each imports the llmpy of the folder it
# starts in (this checkout; arch's other tree its own)
export PYTHONPATH=.
GPUS=$(nvidia-smi -L | wc -l)
sections=${*:-tests emulate resume multigpu rankfault kernels bench emubench quality sample faults debug arch sizes fp8}
A100="LLMPY_WGMMA=0 LLMPY_ARCH=compute_80 LLMPY_MAX_SHARED_KB=163"
RTX="LLMPY_WGMMA=0 LLMPY_ARCH=compute_80 LLMPY_MAX_SHARED_KB=99"
summary=()
# each line goes to $OUT/summary.txt as it comes, so a round cut short keeps what it had
note() { summary+=("$1"); echo "$1" >> "$OUT/summary.txt"; }

for s in $sections; do
  case $s in
  tests)
    timeout ${TESTS_TIMEOUT:-300} make test-gpu SYSTEM_PYTHON=1 > "$OUT/test_gpu.log" 2>&1
    note "test-gpu (rc $?): $(grep -E 'passed|failed' "$OUT/test_gpu.log" | tail -1)" ;;
  emulate)
    for path in A100 RTX; do
      eval "env ${!path} timeout ${TESTS_TIMEOUT:-300} make test-gpu SYSTEM_PYTHON=1" > "$OUT/test_gpu_$path.log" 2>&1
      note "test-gpu as $path [${!path}] (rc $?): $(grep -E 'passed|failed' "$OUT/test_gpu_$path.log" | tail -1)"
    done ;;
  emubench)
    for path in HOPPER A100 RTX; do
      flags=${!path:-}
      for B in 64 8; do
        eval "env $flags timeout 150 python3 dev/bench.py --B $B --steps 20 --no-torch" > "$OUT/emubench.tmp" 2>&1
        rc=$?
        cat "$OUT/emubench.tmp" >> "$OUT/emubench.log"
        note "bench $path B=$B (rc $rc): $(grep -E '^llmpy +\|' "$OUT/emubench.tmp" | tail -1)"
      done
    done ;;
  quality)
    rm -rf /tmp/llmpy_quality
    timeout 300 python3 train_gpt2.py -e d12 -b 64 -t 1024 -x 40 -v 20 -m 2 -s 0 -l 0.0006 -u 10 -c 0.1 \
      -o /tmp/llmpy_quality -n 40 > "$OUT/quality.log" 2>&1
    rc=$?
    tps=$(grep -E '^step' "$OUT/quality.log" | tail -30 | sed -E 's/.*\| ([0-9]+) tok\/s.*/\1/' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    note "quality d12 40 steps (rc $rc): $(grep -E '^val loss' "$OUT/quality.log" | tail -1), median of steps 11-40: $tps tokens/s" ;;
  sample)
    for cache in 1 0; do
      timeout 200 python3 sample_gpt2.py -e d12 --prompt "To be, or not to be" -g 256 --top_k 40 \
        --device cuda --kv_cache $cache > "$OUT/sample_kv$cache.log" 2>&1
      note "sample d12 256 tokens, kv_cache $cache (rc $?): $(grep -i 'tok' "$OUT/sample_kv$cache.log" | tail -1)"
    done
    model=/tmp/llmpy_quality/model_00000040.bin
    if [ -f $model ]; then
      for device in cuda cpu; do
        timeout 300 python3 sample_gpt2.py -e $model --prompt "ROMEO:" -g 32 --top_k 1 --device $device \
          > "$OUT/greedy_$device.log" 2>/dev/null
      done
      same=$(python3 -c "import sys; a, b = (open(f).read() for f in sys.argv[1:]); n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))); print('identical' if a == b else f'the same for {n} characters')" "$OUT/greedy_cuda.log" "$OUT/greedy_cpu.log")
      note "greedy GPU bf16 against CPU fp32, 32 tokens from the quality run: $same"
    fi ;;
  faults)
    python3 -c "import numpy as np; from llmpy.shards import write_datafile; t = np.random.default_rng(0).integers(0, 50257, 300000); t[123456] = 60000; write_datafile('/tmp/bad_token.bin', t)" > /dev/null
    start=$(date +%s.%N)
    timeout 200 python3 train_gpt2.py -e d12 -i /tmp/bad_token.bin -b 8 -t 1024 -x 40 -v 0 -s 0 > "$OUT/faults.log" 2>&1
    note "bad token id (rc $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s): $(tail -1 "$OUT/faults.log")"
    start=$(date +%s.%N)
    LLMPY_FAULT=stall:step=3:rank=0:seconds=120 timeout 200 python3 train_gpt2.py -e d12 -b 8 -t 1024 -x 8 -v 0 -s 0 \
      --watchdog 5 >> "$OUT/faults.log" 2>&1
    note "stalled step, --watchdog 5 (rc $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s): $(grep -i watchdog "$OUT/faults.log" | tail -1)"
    timeout 200 python3 train_gpt2.py -e d48 -b 64 -t 1024 -x 1 -v 0 -s 0 >> "$OUT/faults.log" 2>&1
    note "d48 -b 64 (rc $?): $(tail -1 "$OUT/faults.log" | cut -c1-200)"
    timeout 280 python3 train_gpt2.py -e d48 -b auto -t 1024 -x 2 -v 0 -s 0 >> "$OUT/faults.log" 2>&1
    note "d48 -b auto (rc $?): $(grep -E '^-b auto: chose|^step +2/' "$OUT/faults.log" | tr '\n' ' ' | cut -c1-250)" ;;
  debug)
    timeout 300 python3 -m dev.debug_model -e d12 -b 4 -t 256 --compare > "$OUT/debug.log" 2>&1
    note "debug_model --compare (rc $?): $(grep -E '^(activations|gradients)' "$OUT/debug.log" | tr '\n' ' ')" ;;
  arch)
    ln -sfn "$PWD/dev/data/shakespeare" .carry/before/dev/data/shakespeare 2>/dev/null
    for run in 1 2 3; do
      for tree in .carry/before .; do
        (cd "$tree" && timeout 150 python3 dev/bench.py --steps 20 --no-torch) > "$OUT/arch.tmp" 2>&1
        note "bench $([ "$tree" = . ] && echo after || echo before) run $run: $(grep -E '^llmpy +\|' "$OUT/arch.tmp" | tail -1)"
      done
    done ;;
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
    note "resume (rc $rc): steps 11-20 differing between the full and the resumed run: $same" ;;
  multigpu)
    if [ "$GPUS" -gt 1 ]; then
      timeout 280 python3 dev/multigpu.py --gpus "$GPUS" > "$OUT/multigpu.log" 2>&1
      note "multigpu d12 (rc $?)"
      timeout 280 python3 dev/multigpu.py --gpus "$GPUS" --model d48 --B 8 --check_B 2 --recompute 1 --steps 12 >> "$OUT/multigpu.log" 2>&1
      note "multigpu d48 (rc $?)"
    fi ;;
  overlap)
    if [ "$GPUS" -gt 1 ]; then
      export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
      timeout 400 python3 dev/multigpu.py --gpus "$GPUS" --overlap --steps 12 > "$OUT/overlap.log" 2>&1
      note "overlap d12 NVLink (rc $?)"
      timeout 60 mpirun -np "$GPUS" --bind-to none python3 dev/allreduce_bench.py >> "$OUT/overlap.log" 2>&1
      for setting in "1 1" "2 2" "4 4"; do
        set -- $setting
        NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
          NCCL_SOCKET_NTHREADS=$1 NCCL_NSOCKS_PERTHREAD=$2 \
          timeout 120 mpirun -np "$GPUS" --bind-to none python3 dev/allreduce_bench.py >> "$OUT/overlap.log" 2>&1
        note "all-reduce over sockets, $1 threads x $2 sockets (rc $?)"
      done
      timeout 500 python3 dev/multigpu.py --gpus "$GPUS" --overlap --steps 12 --transport socket \
        --socket_threads 1 --sockets 1 >> "$OUT/overlap.log" 2>&1
      note "overlap d12 over sockets 1x1 (rc $?)"
    fi ;;
  rankfault)
    if [ "$GPUS" -gt 1 ]; then
      MPIEXEC=$(python3 -c "import sys; from pathlib import Path; p = Path(sys.executable).parent / 'mpiexec'; print(p if p.exists() else 'mpiexec')")
      export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
      flags="-e d12 -b 16 -t 1024 -x 30 -v 0 -s 0"
      start=$(date +%s.%N)
      timeout 300 $MPIEXEC -n "$GPUS" python3 train_gpt2.py $flags > "$OUT/rankfault.log" 2>&1 &
      job=$!
      until grep -qE '^step +4/' "$OUT/rankfault.log" 2>/dev/null || ! kill -0 $job 2>/dev/null; do sleep 0.2; done
      killed=$(date +%s.%N)
      pkill -9 -n -f "^python3 train_gpt2.py"       # the newest rank: not rank 0, which prints
      wait $job
      note "rank killed in step 4 (rc $?): the job ended $(python3 -c "print(f'{$(date +%s.%N) - $killed:.1f}')") s later; $(grep -ciE 'error|abort' "$OUT/rankfault.log") error lines"
      start=$(date +%s.%N)
      LLMPY_FAULT=stall:step=4:rank=1:seconds=600 timeout 300 $MPIEXEC -n "$GPUS" python3 train_gpt2.py $flags \
        --watchdog 30 >> "$OUT/rankfault.log" 2>&1
      note "rank 1 stalled in step 4, --watchdog 30 (rc $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s): $(grep -i watchdog "$OUT/rankfault.log" | tail -1 | cut -c1-200)"
    fi ;;
  kernels)
    for family in "attention 4 7 10 12 13" matmul layernorm classifier adamw elementwise fp8; do
      set -- $family
      echo "== python3 dev/cuda/$*" >> "$OUT/kernels.log"
      timeout 150 python3 dev/cuda/$1.py "${@:2}" > /tmp/dev_kernel.log 2>&1
      rc=$?
      cat /tmp/dev_kernel.log >> "$OUT/kernels.log"
      note "dev/cuda/$1.py (rc $rc): $(grep -c FAIL /tmp/dev_kernel.log) checks failed"
    done ;;
  sizes)
    for size in "d24 32" "d36 16"; do
      set -- $size
      timeout 280 python3 dev/bench.py --model $1 --B $2 --steps 10 --profile >> "$OUT/sizes.log" 2>&1
      note "bench $1 B=$2 with PyTorch (rc $?)"
    done
    timeout 240 python3 train_gpt2.py -e d48 -b 32 -t 1024 -r 1 -x 12 -v 0 -s 0 >> "$OUT/sizes.log" 2>&1
    note "train d48 B=32 -r 1 (rc $?): $(grep -E '^step +12/' "$OUT/sizes.log")" ;;
  fp8)
    timeout 150 python3 -m pytest -q tests/gpu/test_fp8.py tests/gpu/test_fp8_model.py > "$OUT/fp8_tests.log" 2>&1
    note "FP8 GPU tests (rc $?): $(grep -E 'passed|failed' "$OUT/fp8_tests.log" | tail -1)"
    timeout 60 python3 dev/cuda/fp8_cast.py > "$OUT/fp8_cast.log" 2>&1
    note "dev/cuda/fp8_cast.py (rc $?): $(grep -c FAIL "$OUT/fp8_cast.log") checks failed; a step's casts (ms): $(tail -3 "$OUT/fp8_cast.log" | tr -s ' \n' ' ')"
    timeout 200 python3 dev/cuda/fp8.py > "$OUT/fp8.log" 2>&1
    note "dev/cuda/fp8.py (rc $?): $(grep -c FAIL "$OUT/fp8.log") checks failed" ;;
  bench)
    timeout 240 python3 dev/bench.py --steps 30 --profile > "$OUT/bench.log" 2>&1
    note "bench B=64 (rc $?)"
    timeout 120 python3 dev/bench.py --B 8 --steps 50 --no-torch > "$OUT/bench_b8.log" 2>&1
    note "bench B=8 (rc $?)" ;;
  esac
done

echo "== $GPUS GPU(s): $(nvidia-smi -L | head -1)"
for line in "${summary[@]}"; do echo "$line"; done
[ -f "$OUT/multigpu.log" ] && grep -E "largest|GPUs \||^ +[0-9]+ \| +[0-9,]+ \||^d[0-9]+" "$OUT/multigpu.log"
[ -f "$OUT/overlap.log" ] && grep -E "^NCCL |^all-reduce|print the same|^-z|^ *[01] \|" "$OUT/overlap.log"
[ -f "$OUT/bench.log" ] && tail -4 "$OUT/bench.log"
[ -f "$OUT/bench_b8.log" ] && tail -3 "$OUT/bench_b8.log"
[ -f "$OUT/sizes.log" ] && grep -A3 "^system" "$OUT/sizes.log"
[ -f "$OUT/fp8.log" ] && tail -6 "$OUT/fp8.log"
