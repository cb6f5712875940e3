#!/bin/sh
# The GPU build `make install` adds to the environment, from the CUDA version that the NVIDIA
# driver supports (the "CUDA Version" in nvidia-smi's header): cu13 for 13 and newer, cu12 for
# 12.x, cpu where nvidia-smi is absent or lists no GPU, old-X.Y for a driver older than CUDA 12.
smi=$(nvidia-smi 2>/dev/null) && nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || { echo cpu; exit 0; }
version=$(printf '%s\n' "$smi" | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
major=${version%%.*}
if [ -z "$version" ]; then echo old-unknown
elif [ "$major" -ge 13 ]; then echo cu13
elif [ "$major" -eq 12 ]; then echo cu12
else echo "old-$version"
fi
