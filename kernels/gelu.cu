// GELU, tanh approximation (GPT-2's): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Elementwise and memory-bound: each thread moves 8 bf16 with one 128-bit load/store, math in fp32.
#include "common.cuh"

#define GELU_SCALE 0.7978845608028654f   // sqrt(2/pi)

extern "C" __global__ void gelu_forward(bf16* out, const bf16* inp, int N) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 x = load128cs(inp + i), y;
    for (int k = 0; k < x128::size; k++) {
        float xi = to_float(x[k]);
        y[k] = to_bf16(0.5f * xi * (1.0f + tanhf(GELU_SCALE * (xi + 0.044715f * xi * xi * xi))));
    }
    store128(out + i, y);
}

// dinp = dout * gelu'(inp); dinp may alias dout (the model runs it in place)
extern "C" __global__ void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, int N) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 x = load128cs(inp + i), d = load128(dout + i), r;
    for (int k = 0; k < x128::size; k++) {
        float xi = to_float(x[k]);
        float th = tanhf(GELU_SCALE * (xi + 0.044715f * xi * xi * xi));
        float dth = GELU_SCALE * (1.0f + 3.0f * 0.044715f * xi * xi) * (1.0f - th * th);
        r[k] = to_bf16(to_float(d[k]) * (0.5f * (1.0f + th) + 0.5f * xi * dth));
    }
    store128(dinp + i, r);
}
