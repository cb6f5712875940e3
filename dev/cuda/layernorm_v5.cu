// dev/cuda/layernorm.py's version 5, tried and not kept: kernels/layernorm.cu's backward
// (version 4) with each warp's rows streamed through a cp.async pipeline in shared memory, the
// next row's copy in flight while the warp computes on this one. Not faster than version 4 on the
// H200 (B = 64, both kernels): 0.130 ms against version 2's 0.150 in one run, 0.145 against
// version 4's 0.126 and version 2's 0.145 in another; three stages no better than two (kernel
// alone 0.129 / 0.126 ms). Layout as in kernels/layernorm.cu; each row's math is its
// backward_row (kernels/layernorm.cuh).
#include "layernorm.cuh"

// cp.async: 16 (or 4) bytes global -> shared without passing through registers. The "memory"
// clobbers keep the compiler from moving this thread's shared-memory loads across the copies and
// the wait: each lane reads back only what it copied itself, so no barrier is needed.
__device__ __forceinline__ void copy16_async(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                 :: "r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void copy4_async(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n"
                 :: "r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void copy_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>   // until at most N of this thread's committed groups are still in flight
__device__ __forceinline__ void copy_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

#ifndef BACKWARD_STAGES
#define BACKWARD_STAGES 2   // rows of a warp in flight: the one computed on and the next
#endif
// bytes of one stage of a warp's pipeline: the row's dout, x, dinp (C bf16 each), mean and rstd
__device__ __forceinline__ int stage_bytes(int C) { return 6 * C + 16; }

// Start copying row `row` (if < N) of dout, x, dinp into the stage at `buf`: lane l its chunks
// c = 8*l + 256*i of each, lanes 0 and 1 mean[row] and rstd[row]. Commits a group even when
// there is no row, so that every iteration commits exactly one.
template <int CHUNKS>
__device__ __forceinline__ void prefetch_row(char* buf, const bf16* dout, const bf16* inp,
                                             const bf16* dinp, const float* mean,
                                             const float* rstd, int row, int N, int C, int lane) {
    if (row < N) {
        size_t offset = (size_t)row * C;
        bf16* b = reinterpret_cast<bf16*>(buf);
#pragma unroll
        for (int i = 0; i < CHUNKS; i++) {
            int c = lane * 8 + 256 * i;
            if (c < C) {
                copy16_async(b + c, dout + offset + c);
                copy16_async(b + C + c, inp + offset + c);
                copy16_async(b + 2 * C + c, dinp + offset + c);
            }
        }
        if (lane < 2) copy4_async(buf + 6 * C + 4 * lane, (lane == 0 ? mean : rstd) + row);
    }
    copy_async_commit();
}

// Backward with the row in registers, for C <= 256 * CHUNKS (CHUNKS <= 3: C <= 768). Warp g of
// the grid's G warps takes rows g, g + G, g + 2G, ... (the launcher sizes the grid to what the
// GPU holds at once: one wave, no tail). Lane l handles chunks c = 8*l + 256*i of the row.
// Each warp streams its rows through a pipeline of BACKWARD_STAGES stages in shared memory
// (dynamic, per warp BACKWARD_STAGES * stage_bytes(C)): while it computes on one row, cp.async
// brings the next row's dout, x, dinp, mean, rstd (4.6 KB at C = 768), so an SM keeps ~16 rows
// in flight whatever its warps are doing, and the copies take no registers. A lane copies its
// own chunks and reads back only those. From shared memory the row goes to registers once: both
// row sums (g, g*n) and then dx come from them, dx is added to the dinp already there and
// stored: DRAM moves the minimum, 8 bytes an element, nothing is read twice. The weight's chunks
// are loaded once. dbias, dweight of a lane's channels accumulate over its rows in fp32
// registers (16 a chunk; 128 registers in all, so 16 warps an SM). At the end each warp writes
// its sums over its own stages ([dbias | dweight], 2C floats), and the block adds its warps'
// sums in warp order into partials[blockIdx.x] = (dbias | dweight).
template <int CHUNKS>
__device__ __forceinline__ void backward_rows(bf16* __restrict__ dinp, float* __restrict__ partials,
                                              const bf16* __restrict__ dout,
                                              const bf16* __restrict__ inp,
                                              const bf16* __restrict__ weight,
                                              const float* __restrict__ mean,
                                              const float* __restrict__ rstd, int N, int C) {
    extern __shared__ f128 pipeline[];
    int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int grid_warps = gridDim.x * warps;
    char* stages = reinterpret_cast<char*>(pipeline) + warp * BACKWARD_STAGES * stage_bytes(C);
    x128 w[CHUNKS];
    float db[CHUNKS][x128::size], dw[CHUNKS][x128::size];
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        int c = lane * 8 + 256 * i;
        if (c < C) w[i] = load128(weight + c);
        for (int k = 0; k < x128::size; k++) { db[i][k] = 0.0f; dw[i][k] = 0.0f; }
    }
    int row = blockIdx.x * warps + warp;
    for (int s = 0; s < BACKWARD_STAGES - 1; s++)
        prefetch_row<CHUNKS>(stages + s * stage_bytes(C), dout, inp, dinp, mean, rstd,
                             row + s * grid_warps, N, C, lane);
    for (int stage = 0; row < N; row += grid_warps) {
        int ahead = (stage + BACKWARD_STAGES - 1) % BACKWARD_STAGES;
        prefetch_row<CHUNKS>(stages + ahead * stage_bytes(C), dout, inp, dinp, mean, rstd,
                             row + (BACKWARD_STAGES - 1) * grid_warps, N, C, lane);
        copy_async_wait<BACKWARD_STAGES - 1>();   // this row's group has landed
        char* buf = stages + stage * stage_bytes(C);
        stage = (stage + 1) % BACKWARD_STAGES;
        const bf16* b = reinterpret_cast<const bf16*>(buf);
        x128 d[CHUNKS], v[CHUNKS], r[CHUNKS];
#pragma unroll
        for (int i = 0; i < CHUNKS; i++) {
            int c = lane * 8 + 256 * i;
            if (c < C) {
                d[i] = load128(b + c);
                v[i] = load128(b + C + c);
                r[i] = load128(b + 2 * C + c);
            }
        }
        float stat = lane < 2 ? reinterpret_cast<const float*>(buf + 6 * C)[lane] : 0.0f;
        float m = __shfl_sync(0xffffffff, stat, 0), s = __shfl_sync(0xffffffff, stat, 1);
        float no_sums[1][x128::size];
        backward_row<CHUNKS, false>(dinp + (size_t)row * C, d, v, r, w, m, s, db, dw, no_sums,
                                    lane, C);
    }
    copy_async_wait<0>();   // the groups left are empty (rows >= N); the stages are free
    f128* mine = reinterpret_cast<f128*>(stages);   // 2C floats: dbias, then dweight
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        int c = lane * 8 + 256 * i;
        if (c >= C) continue;
        for (int h = 0; h < 2; h++) {
            f128 b, u;
            for (int k = 0; k < f128::size; k++) {
                b[k] = db[i][h * f128::size + k];
                u[k] = dw[i][h * f128::size + k];
            }
            mine[c / 4 + h] = b;
            mine[(C + c) / 4 + h] = u;
        }
    }
    __syncthreads();
    f128* out = reinterpret_cast<f128*>(partials + (size_t)blockIdx.x * 2 * C);
    int stride = BACKWARD_STAGES * stage_bytes(C) / 16;   // f128 a warp
    for (int q = threadIdx.x; q < C / 2; q += blockDim.x) {
        f128 sum = pipeline[q];
        for (int j = 1; j < warps; j++) {
            f128 a = pipeline[j * stride + q];
            for (int k = 0; k < f128::size; k++) sum[k] += a[k];
        }
        out[q] = sum;
    }
}

// At most 512 threads a block: 65536 registers / 512 threads caps the kernel at 128 registers.
// dev/cuda/layernorm.py's backward_v5 launches it as llmpy launches version 4, and sums the
// partials with kernels/layernorm.cu's layernorm_backward_params.
extern "C" __global__ void __launch_bounds__(512)
layernorm_backward(bf16* dinp, float* partials, const bf16* dout, const bf16* inp,
                   const bf16* weight, const float* mean, const float* rstd, int N, int C) {
    if (C <= 256) backward_rows<1>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
    else if (C <= 512) backward_rows<2>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
    else backward_rows<3>(dinp, partials, dout, inp, weight, mean, rstd, N, C);
}
