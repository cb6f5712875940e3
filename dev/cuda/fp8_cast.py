"""The FP8 cast-transpose (kernels/fp8.cu): a bf16 tensor to FP8 bytes in its own layout and
transposed, with its largest |x|, as llmpy/fp8_linear.py casts every linear's input (E4M3) and
output gradient (E5M2). It moves 4 bytes an element (2 read, 1 + 1 written), the bytes of a bf16
copy of the tensor, so a device-to-device copy is the ceiling it is timed against.

    python dev/cuda/fp8_cast.py [version...]

  1  one 32 x 32 tile a block of (32, 8) threads, one bf16 a thread a row: 2-byte loads, 1-byte
     stores (dev/cuda/fp8_cast_v1.cu: the model's first)
  2  llmpy's (kernels/fp8.cu): 128 x 64 tiles of 256 threads, 16-byte loads and 8-byte stores
     both ways, each warp's transposed stores whole 32-byte sectors, read from the shared tile
     without bank conflicts; a sixteenth of version 1's blocks, so of its amax atomics too
Checks: both layouts' bytes and the amax equal llmpy/fp8.py's exactly (outputs poisoned first)
at a shape of partial tiles, in both formats. Timings: E4M3 at d12's widths, B*T = 65536 rows;
the last table adds up the casts of a step (12 layers, each: inputs 3 x 768 and 3072, output
gradients 2304, 768, 3072 and 768).
"""
import cupy as cp
import numpy as np
from common import DEV_DIR, gpu, median_ms, print_table, selected_versions

from llmpy import fp8
from llmpy.cuda import fp8 as cuda_fp8
from llmpy.cuda.runtime import launch
from llmpy.testing.fp8 import device_scalar, poisoned_bytes, wide_range

N = 64 * 1024
CHECK_SHAPE = (544, 800)        # 4 tiles and 32 rows by 12 tiles and 32 columns in version 2
LAYERS = 12
CASTS = {768: 5, 2304: 1, 3072: 2}      # a layer's casts of each width
VERSIONS = {1: "32 x 32 tiles, 1-byte stores", 2: "128 x 64 tiles, 8-byte stores (llmpy's)"}


def cast_transpose_v1(out, out_t, amax, inp, scale, fmt):
    rows, cols = inp.shape
    launch(DEV_DIR / "fp8_cast_v1.cu", f"cast_transpose_{fmt.name}", (cols // 32, rows // 32), (32, 8),
           out, out_t, amax, inp, scale, rows, cols)


KERNELS = {1: cast_transpose_v1, 2: cuda_fp8.cast_transpose}


def check(rng, version, fmt):
    rows, cols = CHECK_SHAPE
    values = wide_range(rng, rows, cols)
    x = gpu(values)
    scale = np.float32(fmt.max / 4)                     # some values saturate
    out, out_t, amax = poisoned_bytes(rows, cols), poisoned_bytes(cols, rows), device_scalar(0.0)
    KERNELS[version](out, out_t, amax, x, device_scalar(scale), fmt)
    expected = fp8.quantize(fmt, values, scale)
    return (np.array_equal(fp8.decode(fmt, cp.asnumpy(out)), expected)
            and np.array_equal(fp8.decode(fmt, cp.asnumpy(out_t)), expected.T)
            and cp.asnumpy(amax)[0] == np.abs(values).max())


def main():
    versions = selected_versions(VERSIONS)
    rng = np.random.default_rng(0)
    rows = [(v, VERSIONS[v], fmt.name, "ok" if check(rng, v, fmt) else "FAIL")
            for v in versions for fmt in (fp8.E4M3, fp8.E5M2)]
    print(f"checks at {CHECK_SHAPE[0]} x {CHECK_SHAPE[1]}: both layouts and the amax, exact")
    print_table(rows, ["version", "what", "format", ""])

    rows, step = [], {v: 0.0 for v in ["copy", *versions]}
    for cols, count in CASTS.items():
        x = gpu(rng.standard_normal((N, cols)))
        copy = cp.empty_like(x)
        out, out_t, amax = cp.empty((N, cols), cp.uint8), cp.empty((cols, N), cp.uint8), device_scalar(0)
        scale = device_scalar(1.0)
        timed = {"copy": lambda: copy.__setitem__(Ellipsis, x)}
        for v in versions:
            timed[v] = lambda k=KERNELS[v]: k(out, out_t, amax, x, scale, fp8.E4M3)
        for name, fn in timed.items():
            ms = median_ms(fn)
            step[name] += LAYERS * count * ms
            rows.append((f"{N}x{cols}", name, f"{ms:.4f}", f"{4 * N * cols / ms / 1e6:.0f}"))
    print("\none cast of each width (GB/s counts 4 bytes an element; copy: the bf16 tensor)")
    print_table(rows, ["shape", "version", "ms", "GB/s"])
    print(f"\na step's casts at d12 B=64 ({LAYERS} layers)")
    print_table([(name, f"{ms:.2f}") for name, ms in step.items()], ["version", "ms"])


if __name__ == "__main__":
    main()
