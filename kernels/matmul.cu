// The matmul's bias gradient (llmpy/cuda/matmul.py; the products, and the forward's bias in
// cuBLASLt's epilogue, are NVIDIA's). Row-major, N = B*T rows:
//   dbias (OC) += column sums of dout (N, OC), deterministically (no atomics):
//   bias_backward_partial sums chunks of rows into partial (chunks, OC) fp32, then
//   bias_backward_finish sums each column's chunks in a fixed order and adds into bf16 dbias.
#include "common.cuh"

// Block (32, BIAS_WARPS): lane x owns columns [256*blockIdx.x + 8x, +8), warp y sums the rows
// y, y + BIAS_WARPS, ... of row chunk blockIdx.y; the warps' sums are then added in order of y.
// BIAS_WARPS comes from llmpy/launch_config.py (-D).
#ifndef BIAS_WARPS
#error "BIAS_WARPS: set by llmpy/launch_config.py's KNOBS"
#endif
extern "C" __global__ void bias_backward_partial(float* partial, const bf16* dout, int N, int OC,
                                                 int rows_per_chunk) {
    __shared__ float sums[BIAS_WARPS][32 * x128::size];
    int col = (blockIdx.x * 32 + threadIdx.x) * x128::size;
    int row_begin = blockIdx.y * rows_per_chunk, row_end = min(N, row_begin + rows_per_chunk);
    float acc[x128::size] = {};
    if (col < OC) {
        #pragma unroll 4
        for (int r = row_begin + threadIdx.y; r < row_end; r += BIAS_WARPS) {
            x128 d = load128(dout + (size_t)r * OC + col);
            for (int k = 0; k < x128::size; k++) acc[k] += to_float(d[k]);
        }
    }
    for (int k = 0; k < x128::size; k++) sums[threadIdx.y][threadIdx.x * x128::size + k] = acc[k];
    __syncthreads();
    // the block's 256 threads now take one column each
    int c = threadIdx.y * 32 + threadIdx.x;
    int out_col = blockIdx.x * 32 * x128::size + c;
    if (out_col >= OC) return;
    float total = 0.0f;
    for (int y = 0; y < BIAS_WARPS; y++) total += sums[y][c];
    partial[(size_t)blockIdx.y * OC + out_col] = total;
}

// Block (32, BIAS_WARPS): warp y sums chunks y, y + BIAS_WARPS, ... of column 32*blockIdx.x + x,
// then the warps' sums are added in order of y.
extern "C" __global__ void bias_backward_finish(bf16* dbias, const float* partial, int chunks,
                                                int OC) {
    __shared__ float sums[BIAS_WARPS][32];
    int col = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (col < OC) {
        for (int c = threadIdx.y; c < chunks; c += BIAS_WARPS) acc += partial[(size_t)c * OC + col];
    }
    sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || col >= OC) return;
    float total = 0.0f;
    for (int y = 0; y < BIAS_WARPS; y++) total += sums[y][threadIdx.x];
    dbias[col] = to_bf16(to_float(dbias[col]) + total);
}
