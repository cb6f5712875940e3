#!/bin/sh
# A Python environment for a GPU machine with no network, from wheels fetched beforehand on one
# that has it (same CPU architecture; give the GPU machine's Python version):
#   scripts/offline_env.sh download WHEELS PYVER REQUIREMENTS...   e.g. download wheels 3.12 requirements.txt requirements-gpu-cu12.txt
#   scripts/offline_env.sh install WHEELS VENV REQUIREMENTS...     on the GPU machine, from WHEELS only
# Then `make test-gpu VENV=VENV` (or VENV/bin/python train_gpt2.py ...). CuPy finds CUDA's
# libraries (NVRTC, cuBLAS, NCCL) in the wheels: no CUDA toolkit is needed on that machine.
set -eu
usage() { echo "usage: $0 download WHEELS PYVER REQUIREMENTS... | install WHEELS VENV REQUIREMENTS..." >&2; exit 2; }
[ $# -ge 4 ] || usage
mode=$1 wheels=$2 where=$3
shift 3
reqs=""
for r in "$@"; do
  [ -f "$r" ] || { echo "error: $r: no such requirements file" >&2; exit 1; }
  reqs="$reqs -r $r"
done
case $mode in
download)
  mkdir -p "$wheels"
  # shellcheck disable=SC2086
  python3 -m pip download -q --only-binary=:all: --python-version "$where" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels" $reqs
  echo "$(ls "$wheels" | wc -l) wheels in $wheels ($(du -sh "$wheels" | cut -f1))" ;;
install)
  [ -d "$wheels" ] || { echo "error: $wheels: no such folder of wheels" >&2; exit 1; }
  python3 -m venv "$where"
  # shellcheck disable=SC2086
  "$where/bin/python" -m pip install -q --no-index --find-links "$wheels" $reqs
  echo "installed into $where from $wheels" ;;
*) usage ;;
esac
