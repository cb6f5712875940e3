// dev/cuda/fp8_cast.py's version 1: kernels/fp8.cu's cast-transpose as it ran in the model first
// (df1e217), frozen. One 32 x 32 tile a block of (32, 8) threads; each thread converts one bf16
// a row (2-byte loads, 1-byte stores), the tile goes through shared memory so that the
// transposed stores run along rows too. Rows and cols multiples of 32. Well under the copy
// bandwidth (docs/performance.md, "FP8 in the model").
#include "fp8.cuh"

constexpr int TILE = 32, TILE_ROWS = 8;

template <__nv_fp8_interpretation_t FORMAT>
__device__ void cast_transpose(fp8* out, fp8* out_t, float* amax, const bf16* inp,
                               const float* scale, int rows, int cols) {
    __shared__ fp8 tile[TILE][TILE + 4];
    int c0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
    float s = *scale;
    unsigned int largest = 0;
    for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        size_t at = (size_t)(r0 + r) * cols + c0 + threadIdx.x;
        float v = to_float(inp[at]);
        largest = max(largest, abs_bits(v));
        fp8 q = to_fp8<FORMAT>(v * s);
        out[at] = q;
        tile[r][threadIdx.x] = q;
    }
    __syncthreads();
    for (int c = threadIdx.y; c < TILE; c += TILE_ROWS)
        out_t[(size_t)(c0 + c) * rows + r0 + threadIdx.x] = tile[threadIdx.x][c];
    record_amax(amax, largest);
}
extern "C" __global__ void cast_transpose_e4m3(fp8* out, fp8* out_t, float* amax, const bf16* inp,
                                               const float* scale, int rows, int cols) {
    cast_transpose<__NV_E4M3>(out, out_t, amax, inp, scale, rows, cols);
}
extern "C" __global__ void cast_transpose_e5m2(fp8* out, fp8* out_t, float* amax, const bf16* inp,
                                               const float* scale, int rows, int cols) {
    cast_transpose<__NV_E5M2>(out, out_t, amax, inp, scale, rows, cols);
}
