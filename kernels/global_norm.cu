// Squared global norm of the gradients: sum of g^2 over the flat bf16 gradient buffer (N elements),
// in two deterministic phases (no atomics):
//   global_norm_squared_partials: a fixed grid; each thread sums squares in fp32 over a grid-stride
//     loop of 128-bit packets, then partials[block] = that block's sum (block_sum, fixed order);
//   global_norm_squared_total: one warp adds the partials in fp64, in a fixed order, to *out,
//     and turns the norm into AdamW's gradient-clipping factor.
// The grid is a constant of the launcher, not the device's size, so the order of the additions,
// and the bits of the result, are the same on every GPU.
#include "common.cuh"

extern "C" __global__ void global_norm_squared_partials(float* partials, const bf16* grads, int N) {
    int tid = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    int packets = N / x128::size;
    float sum = 0.0f;
    for (int i = tid; i < packets; i += stride) {
        x128 g = load128cs(grads + (size_t)i * x128::size);
        for (int k = 0; k < x128::size; k++) {
            float gk = to_float(g[k]);
            sum += gk * gk;
        }
    }
    int rest = packets * x128::size + tid;     // the N % 8 elements after the last packet
    if (rest < N) {
        float gk = to_float(grads[rest]);
        sum += gk * gk;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// launched with one warp (32 threads). Also AdamW's clip factor, so that the update can follow
// the backward with no read by the host in between: *scale = grad_clip / norm where
// 0 < grad_clip < norm, else 1, with norm = sqrt(*out), in fp64 and rounded to fp32 once: the
// bits the host gets from the same formula on the norm it reads back.
extern "C" __global__ void global_norm_squared_total(double* out, float* scale,
                                                     const float* partials, int n,
                                                     double grad_clip) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += 32) sum += partials[i];
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, offset);
    if (threadIdx.x == 0) {
        *out = sum;
        double norm = sqrt(sum);
        *scale = (float)(grad_clip > 0.0 && grad_clip < norm ? grad_clip / norm : 1.0);
    }
}
