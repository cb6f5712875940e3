// LayerNorm over the last axis of N rows of C channels (bf16, row-major; C % 8 == 0):
//   forward:  mean = sum(x)/C, rstd = 1/sqrt(sum((x - mean)^2)/C + 1e-5),
//             out = (x - mean) * rstd * weight + bias; mean, rstd (N) fp32, saved for backward
//   residual_layernorm_forward: x = a + b rounded to bf16 (stored: the residual stream), then
//             the forward above on that x, in one kernel
//   backward: n = (x - mean) * rstd, g = dout * weight,
//             dinp += rstd * (g - mean(g) - n * mean(g * n))
//             dbias += sum over rows of dout, dweight += sum over rows of dout * n
// One warp per row; lane l handles the 8-channel chunks c = 8*l + 256*i (128-bit accesses).
// Statistics and sums in fp32. dweight/dbias are deterministic: each block sums a fixed set of
// rows into fp32 partials (one slot per block, warps added in warp order), and a second kernel
// adds the partials up in block order.
#include "layernorm.cuh"

#define LN_EPS 1e-5f

// mean and rstd of one row: two passes (the mean, then the variance of x - mean: no
// cancellation), each lane summing its own chunks in order, then the warp's xor tree. Both
// forward kernels use this and normalize() below, so they give the same bits for the same row:
// with -r 2 the model recomputes ln1/ln2 in the backward with layernorm_forward from the residual
// that residual_layernorm_forward wrote. x is a generic pointer: global or shared memory.
__device__ __forceinline__ float2 row_statistics(const bf16* x, int C, int lane) {
    float sum = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        x128 v = load128(x + c);
        for (int k = 0; k < x128::size; k++) sum += to_float(v[k]);
    }
    float m = warp_sum(sum) / C;
    float sq = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        x128 v = load128(x + c);
        for (int k = 0; k < x128::size; k++) { float d = to_float(v[k]) - m; sq += d * d; }
    }
    return make_float2(m, rsqrtf(warp_sum(sq) / C + LN_EPS));
}

// the layernorm of chunk c of a row: (x - mean) * rstd * weight + bias
__device__ __forceinline__ x128 normalize(const x128& v, float2 stats, const bf16* weight,
                                          const bf16* bias, int c) {
    x128 w = load128(weight + c), b = load128(bias + c), o;
    for (int k = 0; k < x128::size; k++)
        o[k] = to_bf16((to_float(v[k]) - stats.x) * stats.y * to_float(w[k]) + to_float(b[k]));
    return o;
}

// The row is read three times (two statistics passes and the output), the last two from L1.
extern "C" __global__ void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp,
                                             const bf16* weight, const bf16* bias, int N, int C) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;   // the whole warp
    const bf16* x = inp + (size_t)row * C;
    float2 stats = row_statistics(x, C, lane);
    for (int c = lane * 8; c < C; c += 256)
        store128(out + (size_t)row * C + c, normalize(load128cs(x + c), stats, weight, bias, c));
    if (lane == 0) { mean[row] = stats.x; rstd[row] = stats.y; }
}

// residual = a + b (summed in fp32, rounded once to bf16, as residual_forward), then
// layernorm_forward of the rounded residual. Each warp keeps its row of the residual in shared
// memory (dynamic, C bf16 per warp), so a and b are read from global memory once and the three
// passes over the row read shared memory: 8 bytes move per element (read a, b; write residual,
// out) against 10 for residual_forward (6) then layernorm_forward (4). Each lane reads back only the
// chunks it wrote itself, so the warp needs no synchronisation.
extern "C" __global__ void residual_layernorm_forward(bf16* residual, bf16* out, float* mean,
                                                      float* rstd, const bf16* a, const bf16* b,
                                                      const bf16* weight, const bf16* bias, int N,
                                                      int C) {
    extern __shared__ x128 residual_rows[];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int row = blockIdx.x * (blockDim.x / 32) + warp;
    if (row >= N) return;   // the whole warp
    bf16* r = reinterpret_cast<bf16*>(residual_rows) + (size_t)warp * C;
    size_t offset = (size_t)row * C;
    for (int c = lane * 8; c < C; c += 256) {
        x128 x = load128cs(a + offset + c), y = load128cs(b + offset + c), sum;
        for (int k = 0; k < x128::size; k++) sum[k] = to_bf16(to_float(x[k]) + to_float(y[k]));
        store128cs(residual + offset + c, sum);   // next read a whole branch later: not cached
        store128(r + c, sum);
    }
    float2 stats = row_statistics(r, C, lane);
    for (int c = lane * 8; c < C; c += 256)
        store128(out + offset + c, normalize(load128(r + c), stats, weight, bias, c));
    if (lane == 0) { mean[row] = stats.x; rstd[row] = stats.y; }
}

// Backward with the row in registers, for C <= 256 * CHUNKS (CHUNKS <= 3: C <= 768). Warp g of
// the grid's G warps takes rows g, g + G, g + 2G, ... (the launcher sizes the grid to what the
// GPU holds at once: one wave, no tail). Lane l holds chunks c = 8*l + 256*i of the row: its
// dout, x and dinp are loaded together (9 128-bit streaming loads in flight a lane at C = 768),
// both row sums (g, g*n) and then dx come from those registers, and dx is added to the dinp
// already loaded: DRAM moves the minimum, 8 bytes an element, nothing is re-read. The weight's
// chunks are loaded once. dbias, dweight of a lane's channels accumulate over its rows in fp32
// registers (16 a chunk; 128 registers in all, so 16 warps an SM). At the end the block adds its
// warps' sums in warp order through shared memory (dynamic, warps * 2C floats:
// [warp][dbias | dweight][C]) into partials[blockIdx.x] = (dbias | dweight).
// Against layernorm_backward_shared (dev/cuda/layernorm.py's version 2): no read-modify-write
// of shared-memory accumulators per row (4 * chunks f128 a lane), no second read of dout and x,
// dinp's load issued with the others rather than after the row sums (the timings are in
// docs/performance.md).
template <int CHUNKS, bool DINP_SUMS>
__device__ __forceinline__ void backward_rows(bf16* __restrict__ dinp, float* __restrict__ partials,
                                              const bf16* __restrict__ dout,
                                              const bf16* __restrict__ inp,
                                              const bf16* __restrict__ weight,
                                              const float* __restrict__ mean,
                                              const float* __restrict__ rstd, int N, int C) {
    extern __shared__ f128 warp_sums[];
    int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    x128 w[CHUNKS];
    float db[CHUNKS][x128::size], dw[CHUNKS][x128::size], dx[DINP_SUMS ? CHUNKS : 1][x128::size];
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        int c = lane * 8 + 256 * i;
        if (c < C) w[i] = load128(weight + c);
        for (int k = 0; k < x128::size; k++) {
            db[i][k] = 0.0f;
            dw[i][k] = 0.0f;
            if (DINP_SUMS) dx[i][k] = 0.0f;
        }
    }
    for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
        size_t offset = (size_t)row * C;
        x128 d[CHUNKS], v[CHUNKS], r[CHUNKS];
#pragma unroll
        for (int i = 0; i < CHUNKS; i++) {
            int c = lane * 8 + 256 * i;
            if (c < C) {
                d[i] = load128cs(dout + offset + c);
                v[i] = load128cs(inp + offset + c);
                r[i] = load128cs(dinp + offset + c);
            }
        }
        backward_row<CHUNKS, DINP_SUMS>(dinp + offset, d, v, r, w, mean[row], rstd[row], db, dw,
                                        dx, lane, C);
    }
    constexpr int PARTS = DINP_SUMS ? 3 : 2;
    f128* mine = warp_sums + warp * (PARTS * C / 4);   // dbias, dweight (, dinp's sums): C each
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        int c = lane * 8 + 256 * i;
        if (c >= C) continue;
        for (int h = 0; h < 2; h++) {
            f128 b, u, x;
            for (int k = 0; k < f128::size; k++) {
                b[k] = db[i][h * f128::size + k];
                u[k] = dw[i][h * f128::size + k];
                if (DINP_SUMS) x[k] = dx[i][h * f128::size + k];
            }
            mine[c / 4 + h] = b;
            mine[(C + c) / 4 + h] = u;
            if (DINP_SUMS) mine[(2 * C + c) / 4 + h] = x;
        }
    }
    __syncthreads();
    f128* out = reinterpret_cast<f128*>(partials + (size_t)blockIdx.x * PARTS * C);
    for (int q = threadIdx.x; q < PARTS * C / 4; q += blockDim.x) {
        f128 sum = warp_sums[q];
        for (int j = 1; j < warps; j++) {
            f128 a = warp_sums[j * (PARTS * C / 4) + q];
            for (int k = 0; k < f128::size; k++) sum[k] += a[k];
        }
        out[q] = sum;
    }
}

// backward_rows with the fewest chunks that hold the row (C <= 768)
template <bool DINP_SUMS>
__device__ __forceinline__ void backward_rows_of(bf16* dinp, float* partials, const bf16* dout,
                                                 const bf16* inp, const bf16* weight,
                                                 const float* mean, const float* rstd, int N,
                                                 int C) {
    if (C <= 256) backward_rows<1, DINP_SUMS>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
    else if (C <= 512) backward_rows<2, DINP_SUMS>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
    else backward_rows<3, DINP_SUMS>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
}

// The backwards' launch bounds come from llmpy/launch_config.py (-D), which sizes their grids.
#if !defined(BACKWARD_THREADS) || !defined(SUMS_THREADS)
#error "BACKWARD_THREADS, SUMS_THREADS: set by llmpy/launch_config.py's KNOBS"
#endif
static_assert(65536 / BACKWARD_THREADS >= 128, "layernorm_backward needs 128 registers a thread");

// At most BACKWARD_THREADS (512) threads a block: 65536 registers / 512 threads caps the kernel
// at 128 registers, which it needs without spilling.
extern "C" __global__ void __launch_bounds__(BACKWARD_THREADS)
layernorm_backward(bf16* dinp, float* partials, const bf16* dout, const bf16* inp,
                   const bf16* weight, const float* mean, const float* rstd, int N, int C) {
    backward_rows_of<false>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
}

// layernorm_backward that also sums the columns of dinp as it stores them (after the +=, bf16),
// into a third part of each block's partials: in the model, dinp is the residual stream's
// gradient, the dout of the next attention or MLP projection backward, whose bias gradient these
// sums are; that saves the projection a pass over dinp. 8 more fp32 accumulators a chunk (154
// registers under nvcc): at most SUMS_THREADS (384) threads a block.
extern "C" __global__ void __launch_bounds__(SUMS_THREADS)
layernorm_backward_sums(bf16* dinp, float* partials, const bf16* dout, const bf16* inp,
                        const bf16* weight, const float* mean, const float* rstd, int N, int C) {
    backward_rows_of<true>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
}

// Backward for any C (the launcher's choice for C > 768). Block b handles rows
// [b*rows_per_block, (b+1)*rows_per_block), warp w the rows w, w + warps, ... of them: a first
// pass over the row for mean(g), mean(g * n), a second (dout, x re-read from cache) for dx. Each
// lane accumulates dbias, dweight for its own channels in a private slice of shared memory (not
// registers: C is not known at compile time), dynamic, warps * 2 * chunks * 256 floats with
// chunks = ceil(C/256), laid out [warp][dbias|dweight][chunk][half][lane] in f128 so that a
// warp's accesses are conflict-free. At the end the block adds the warps' slices in warp order
// into partials[b] = (dbias | dweight), each C floats.
extern "C" __global__ void layernorm_backward_shared(bf16* dinp, float* partials,
                                                     const bf16* dout, const bf16* inp,
                                                     const bf16* weight, const float* mean,
                                                     const float* rstd, int N, int C,
                                                     int rows_per_block) {
    extern __shared__ f128 acc_shared[];
    int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int chunks = (C + 255) / 256;
    int slice = 2 * chunks * 2 * 32;   // f128 per warp
    f128* dbias_acc = acc_shared + warp * slice + lane;   // + (chunk * 2 + half) * 32
    f128* dweight_acc = dbias_acc + chunks * 2 * 32;
    for (int q = 0; q < chunks * 2 * 32; q += 32) {
        for (int k = 0; k < f128::size; k++) { dbias_acc[q][k] = 0.0f; dweight_acc[q][k] = 0.0f; }
    }
    int row_begin = blockIdx.x * rows_per_block, row_end = min(row_begin + rows_per_block, N);
    for (int row = row_begin + warp; row < row_end; row += warps) {
        const bf16* dy = dout + (size_t)row * C;
        const bf16* x = inp + (size_t)row * C;
        float m = mean[row], s = rstd[row];
        float sum_g = 0.0f, sum_gn = 0.0f;
        for (int i = 0, c = lane * 8; c < C; i++, c += 256) {
            x128 d = load128(dy + c), v = load128(x + c), w = load128(weight + c);
            for (int h = 0; h < 2; h++) {
                f128 db = dbias_acc[(i * 2 + h) * 32], dw = dweight_acc[(i * 2 + h) * 32];
                for (int k = 0; k < f128::size; k++) {
                    int e = h * f128::size + k;
                    float dk = to_float(d[e]), n = (to_float(v[e]) - m) * s;
                    float g = dk * to_float(w[e]);
                    sum_g += g;
                    sum_gn += g * n;
                    db[k] += dk;
                    dw[k] += dk * n;
                }
                dbias_acc[(i * 2 + h) * 32] = db;
                dweight_acc[(i * 2 + h) * 32] = dw;
            }
        }
        float mean_g = warp_sum(sum_g) / C, mean_gn = warp_sum(sum_gn) / C;
        bf16* dx = dinp + (size_t)row * C;
        for (int c = lane * 8; c < C; c += 256) {
            x128 d = load128cs(dy + c), v = load128cs(x + c), w = load128(weight + c);
            x128 r = load128(dx + c);
            for (int k = 0; k < x128::size; k++) {
                float n = (to_float(v[k]) - m) * s, g = to_float(d[k]) * to_float(w[k]);
                r[k] = to_bf16(to_float(r[k]) + s * (g - mean_g - n * mean_gn));
            }
            store128(dx + c, r);
        }
    }
    __syncthreads();
    float* out = partials + (size_t)blockIdx.x * 2 * C;
    for (int q = threadIdx.x; q < slice; q += blockDim.x) {
        f128 sum = acc_shared[q];
        for (int w = 1; w < warps; w++) {
            f128 a = acc_shared[w * slice + q];
            for (int k = 0; k < f128::size; k++) sum[k] += a[k];
        }
        int l = q % 32, half = q / 32 % 2, chunk = q / 64 % chunks, which = q / (64 * chunks);
        int c = (chunk * 32 + l) * 8 + half * f128::size;
        if (c < C) store128(out + which * C + c, sum);
    }
}

// partials (blocks, parts * C) -> dbias += column sums of the first C, dweight += of the next C,
// and with parts = 3 dsums += of the last C. blockDim (32, 32): x runs along the columns, y over
// the blocks (y, y + 32, ...); the 32 per-y sums are then added in y order.
extern "C" __global__ void layernorm_backward_params(bf16* dweight, bf16* dbias, bf16* dsums,
                                                     const float* partials, int blocks, int C,
                                                     int parts) {
    __shared__ float sums[32][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.0f;
    if (j < parts * C) {
        for (int b = threadIdx.y; b < blocks; b += 32) sum += partials[(size_t)b * parts * C + j];
    }
    sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y != 0 || j >= parts * C) return;
    for (int y = 1; y < 32; y++) sum += sums[y][threadIdx.x];
    bf16* p = j < C ? dbias + j : j < 2 * C ? dweight + (j - C) : dsums + (j - 2 * C);
    *p = to_bf16(to_float(*p) + sum);
}
