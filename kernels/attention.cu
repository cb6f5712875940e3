// Causal self-attention, the simple version that materializes the (T, T) attention matrix
// (llm.c's train_gpt2.cu before cuDNN). The gemms run in cuBLAS (llmpy/cuda/attention.py);
// here are the permutes and the softmax. Row-major layouts, hs = C / NH:
//   qkv (B, T, 3, NH, hs)    q, k, v side by side, each split into NH heads
//   out, dout (B, T, NH, hs) heads concatenated
//   q, k, v, y and their gradients (B, NH, T, hs): each head's (T, hs) matrix contiguous, so
//     one strided-batched gemm covers all B*NH heads
//   att (B, NH, T, T) = softmax(scale * q k^T) with the future masked: row t has keys 0..t and
//     exact zeros above the diagonal, because the gemms that read att use all T columns
#include "common.cuh"

// Offset of element i of a (B, NH, T, hs) tensor in a token-major (B, T, [...,] NH, hs) tensor
// whose rows are `row` elements long (3*NH*hs for qkv, NH*hs for out).
__device__ __forceinline__ size_t token_major(int i, int T, int NH, int hs, int row) {
    int d = i % hs, t = i / hs % T, h = i / (hs * T) % NH, b = i / (hs * T * NH);
    return (size_t)(b * T + t) * row + h * hs + d;
}

// The permutes move 8 elements (128 bits) per thread: hs % 8 == 0, so a packet stays in one
// head. n = B*NH*T*hs, the size of one (B, NH, T, hs) tensor.
extern "C" __global__ void split_qkv(bf16* q, bf16* k, bf16* v, const bf16* qkv,
                                     int n, int T, int NH, int hs) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    const bf16* src = qkv + token_major(i, T, NH, hs, 3 * NH * hs);
    store128(q + i, load128(src));
    store128(k + i, load128(src + NH * hs));
    store128(v + i, load128(src + 2 * NH * hs));
}

extern "C" __global__ void merge_qkv(bf16* dqkv, const bf16* dq, const bf16* dk, const bf16* dv,
                                     int n, int T, int NH, int hs) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    bf16* dst = dqkv + token_major(i, T, NH, hs, 3 * NH * hs);
    store128(dst, load128(dq + i));
    store128(dst + NH * hs, load128(dk + i));
    store128(dst + 2 * NH * hs, load128(dv + i));
}

// heads (B, NH, T, hs) <- x (B, T, NH, hs)
extern "C" __global__ void split_heads(bf16* heads, const bf16* x, int n, int T, int NH, int hs) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    store128(heads + i, load128(x + token_major(i, T, NH, hs, NH * hs)));
}

// x (B, T, NH, hs) <- heads (B, NH, T, hs)
extern "C" __global__ void merge_heads(bf16* x, const bf16* heads, int n, int T, int NH, int hs) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    store128(x + token_major(i, T, NH, hs, NH * hs), load128(heads + i));
}

// The softmaxes take one warp per row of att, rows = B*NH*T, and run in place. T is any size
// (the sampler grows it one token at a time), so rows need not be 16-byte aligned: lanes read
// single elements, strided by 32, which still coalesces.

// att holds q k^T on entry, softmax(scale * q k^T) masked on exit. Online softmax: one pass
// for the max and the sum of exponentials (rescaled when the max grows, which soon gets rare,
// so most elements cost one expf), one pass to write.
extern "C" __global__ void softmax_forward(bf16* att, int rows, int T, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;   // the whole warp: the shuffles below see all 32 lanes
    int t = row % T;           // the query's position: keys 0..t are visible
    bf16* x = att + (size_t)row * T;
    float maxval = -INFINITY, sum = 0.0f;
    for (int j = lane; j <= t; j += 32) {
        float v = scale * to_float(x[j]);
        if (v > maxval) {
            sum *= expf(maxval - v);
            maxval = v;
        }
        sum += expf(v - maxval);
    }
    float row_max = warp_max(maxval);
    // lanes that saw no key (t < lane) hold maxval = -inf and sum = 0: they add 0
    float norm = 1.0f / warp_sum(sum * expf(maxval - row_max));
    for (int j = lane; j < T; j += 32)
        x[j] = j <= t ? to_bf16(expf(scale * to_float(x[j]) - row_max) * norm) : to_bf16(0.0f);
}

// datt holds dL/datt on entry, dL/dpreatt on exit, where preatt = q k^T (the scale is applied
// here, as in the forward): dpreatt = scale * att * (datt - sum_j datt_j att_j).
extern "C" __global__ void softmax_backward(bf16* datt, const bf16* att, int rows, int T,
                                            float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = row % T;
    const bf16* a = att + (size_t)row * T;
    bf16* d = datt + (size_t)row * T;
    float dot = 0.0f;
    for (int j = lane; j <= t; j += 32) dot += to_float(a[j]) * to_float(d[j]);
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32)
        d[j] = j <= t ? to_bf16(scale * to_float(a[j]) * (to_float(d[j]) - dot)) : to_bf16(0.0f);
}
