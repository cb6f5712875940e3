// FP8 operands for cuBLASLt's FP8 matmuls: bf16 -> E4M3 (activations, weights) or E5M2
// (gradients), multiplied by the tensor's fp32 scale, rounded to nearest even and saturated at the
// format's largest value (__NV_SATFINITE: never inf or NaN from a finite input). Every cast also
// records the tensor's largest |x| (before scaling) for the next step's scale, and
// fp8_update_scales turns those into scales: llmpy/fp8.py is the reference for all of it.
//
// Layouts: inp (rows, cols) row-major bf16; out the same shape in bytes; out_t (cols, rows), the
// transpose, for the products that contract over rows (cuBLASLt's FP8 takes K-major operands
// only: llmpy/cuda/fp8.py).
#include "fp8.cuh"

#if !defined(TILE_ROWS) || !defined(TILE_COLS) || !defined(TILE_THREADS)
#error "compile with -DTILE_ROWS, -DTILE_COLS and -DTILE_THREADS (llmpy/launch_config.py's KNOBS['fp8'])"
#endif

// out[i] = fp8(inp[i] * scale), 8 elements a thread (one 128-bit load, one 64-bit store)
template <__nv_fp8_interpretation_t FORMAT>
__device__ void cast(fp8* out, float* amax, const bf16* inp, const float* scale, int N) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    unsigned int largest = 0;
    if (i < N) {
        x128 x = load128cs(inp + i);
        float s = *scale;
        union { fp8 b[x128::size]; uint2 packed; } q;
        for (int k = 0; k < x128::size; k++) {
            float v = to_float(x[k]);
            largest = max(largest, abs_bits(v));
            q.b[k] = to_fp8<FORMAT>(v * s);
        }
        *reinterpret_cast<uint2*>(out + i) = q.packed;
    }
    record_amax(amax, largest);
}
extern "C" __global__ void cast_e4m3(fp8* out, float* amax, const bf16* inp, const float* scale, int N) {
    cast<__NV_E4M3>(out, amax, inp, scale, N);
}
extern "C" __global__ void cast_e5m2(fp8* out, float* amax, const bf16* inp, const float* scale, int N) {
    cast<__NV_E5M2>(out, amax, inp, scale, N);
}

// out = fp8(inp * scale) and out_t = its transpose, a TILE_ROWS x TILE_COLS tile a block of
// TILE_THREADS threads; rows and cols multiples of 8 (the tiles at the edges are partial). The
// bf16 comes in 16-byte loads along rows, 8 to a thread, each converted once and stored to out
// as 8 bytes and to a shared tile; the transposed pass reads the tile down its columns, 8 rows to
// a thread, and stores 8 bytes of an out_t row. Four lanes cover 32 bytes of one out_t row
// (a whole sector) and a warp 8 such rows; with the tile's rows 68 bytes apart (17 words, odd)
// those 32 lanes read 8 different banks or share a word: no bank conflicts.
// With partial (an output gradient whose linear has a bias), the block also sums its tile's
// columns (unscaled, fp32) into partial[blockIdx.y][cols], each in a fixed order: a thread's rows,
// then the 4 lanes of a warp that share its columns, then the warps in order. matmul.cu's
// bias_backward_finish adds the row blocks' sums into dbias, so the bias gradient takes no pass
// of its own over the tensor.
constexpr int VEC = x128::size;                       // bf16 a load, bytes a store
constexpr int TILE_STRIDE = TILE_COLS + 4;            // bytes from one tile row to the next
static_assert(TILE_COLS % VEC == 0 && TILE_THREADS % (TILE_COLS / VEC) == 0,
              "the loads step through the tile's rows evenly");
static_assert(TILE_ROWS % 32 == 0 && TILE_THREADS == 4 * TILE_COLS,
              "the transposed stores: 4 lanes a column, 32 rows at a time");
static_assert(TILE_STRIDE % 8 == 4, "an odd number of words between tile rows");

template <__nv_fp8_interpretation_t FORMAT>
__device__ void cast_transpose(fp8* out, fp8* out_t, float* amax, float* partial, const bf16* inp,
                               const float* scale, int rows, int cols) {
    __shared__ alignas(4) fp8 tile[TILE_ROWS][TILE_STRIDE];
    __shared__ float warp_sums[TILE_THREADS / 32][TILE_COLS];
    int r0 = blockIdx.y * TILE_ROWS, c0 = blockIdx.x * TILE_COLS, t = threadIdx.x;
    float s = *scale;
    unsigned int largest = 0;
    constexpr int VECS = TILE_COLS / VEC;             // loads across a tile row
    int v = t % VECS, col = c0 + v * VEC;
    float sums[VEC] = {};
    for (int r = t / VECS; r < TILE_ROWS; r += TILE_THREADS / VECS) {
        int row = r0 + r;
        if (row >= rows || col >= cols) continue;
        size_t at = (size_t)row * cols + col;
        x128 x = load128cs(inp + at);
        union { fp8 b[VEC]; uint2 packed; } q;
        for (int k = 0; k < VEC; k++) {
            float f = to_float(x[k]);
            largest = max(largest, abs_bits(f));
            q.b[k] = to_fp8<FORMAT>(f * s);
            sums[k] += f;
        }
        *reinterpret_cast<uint2*>(out + at) = q.packed;
        unsigned int* dst = reinterpret_cast<unsigned int*>(&tile[r][v * VEC]);
        dst[0] = q.packed.x;
        dst[1] = q.packed.y;
    }
    static_assert(VECS == 8, "a warp's lanes v, v + 8, v + 16, v + 24 share columns");
    if (partial) {
        for (int k = 0; k < VEC; k++) {
            sums[k] += __shfl_xor_sync(0xffffffff, sums[k], 8);
            sums[k] += __shfl_xor_sync(0xffffffff, sums[k], 16);
        }
        if (t % 32 < VECS)
            for (int k = 0; k < VEC; k++) warp_sums[t / 32][v * VEC + k] = sums[k];
    }
    __syncthreads();
    if (partial && t < TILE_COLS && c0 + t < cols) {
        float total = 0.0f;
        for (int w = 0; w < TILE_THREADS / 32; w++) total += warp_sums[w][t];
        partial[(size_t)blockIdx.y * cols + c0 + t] = total;
    }
    int c = t / 4;                                    // this thread's column, and 8 rows of each 32
    for (int r = (t % 4) * VEC; r < TILE_ROWS && c0 + c < cols; r += 32) {
        if (r0 + r >= rows) break;
        union { fp8 b[VEC]; uint2 packed; } q;
        for (int k = 0; k < VEC; k++) q.b[k] = tile[r + k][c];
        *reinterpret_cast<uint2*>(out_t + (size_t)(c0 + c) * rows + r0 + r) = q.packed;
    }
    record_amax(amax, largest);
}
extern "C" __global__ void cast_transpose_e4m3(fp8* out, fp8* out_t, float* amax, float* partial,
                                               const bf16* inp, const float* scale, int rows, int cols) {
    cast_transpose<__NV_E4M3>(out, out_t, amax, partial, inp, scale, rows, cols);
}
extern "C" __global__ void cast_transpose_e5m2(fp8* out, fp8* out_t, float* amax, float* partial,
                                               const bf16* inp, const float* scale, int rows, int cols) {
    cast_transpose<__NV_E5M2>(out, out_t, amax, partial, inp, scale, rows, cols);
}

// After a step, for each of `tensors` tensors (one thread each): push this step's largest |x|
// into the front of its history (length values, newest first), reset it for the next step, and
// set scale = fmt_max / max(history) * margin_factor (margin_factor = 2^-margin) with
// scale_inv = 1 / scale for cuBLASLt; a history with no positive finite maximum keeps the scale.
// Tensor t's inverse is scale_inv[t * inv_stride]: cuBLASLt reads each through a scale pointer,
// which must be 16-byte aligned as its matrices are (so the model keeps one every 4 floats).
extern "C" __global__ void fp8_update_scales(float* scale, float* scale_inv, int inv_stride,
                                             float* history, float* amax, int tensors, int length,
                                             float fmt_max, float margin_factor) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tensors) return;
    float* h = history + (size_t)t * length;
    for (int j = length - 1; j > 0; j--) h[j] = h[j - 1];
    h[0] = amax[t];
    amax[t] = 0.0f;
    float largest = 0.0f;
    bool finite = true;
    for (int j = 0; j < length; j++) {
        finite = finite && isfinite(h[j]);
        largest = fmaxf(largest, h[j]);
    }
    if (finite && largest > 0.0f) {
        float s = fmt_max / largest * margin_factor;
        scale[t] = s;
        scale_inv[(size_t)t * inv_stride] = 1.0f / s;
    }
}
