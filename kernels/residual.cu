// Residual add: out = a + b, bf16 in and out, summed in fp32. 8 elements per thread (128 bits).
#include "common.cuh"

extern "C" __global__ void residual_forward(bf16* out, const bf16* a, const bf16* b, int N) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 x = load128cs(a + i), y = load128cs(b + i), r;
    for (int k = 0; k < x128::size; k++) r[k] = to_bf16(to_float(x[k]) + to_float(y[k]));
    store128(out + i, r);
}
