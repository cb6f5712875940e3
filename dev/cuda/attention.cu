// Causal self-attention, the simple version that materializes the (T, T) attention matrix
// (llm.c's train_gpt2.cu before cuDNN). The gemms run in cuBLAS (dev/cuda/attention_simple.py);
// here are the permutes and the softmax. Row-major layouts, hs = C / NH:
//   qkv (B, T, 3, NH, hs)    q, k, v side by side, each split into NH heads
//   out, dout (B, T, NH, hs) heads concatenated
//   q, k, v, y and their gradients (B, NH, T, hs): each head's (T, hs) matrix contiguous, so
//     one strided-batched gemm covers all B*NH heads
//   att (B, NH, T, T) = softmax(scale * q k^T) with the future masked: row t has keys 0..t and
//     exact zeros above the diagonal.
// The gemms cover only what causality needs (llmpy/cuda/attention.py): blocks of `row_block`
// query rows, each with the keys up to the block's end. So the softmaxes read keys 0..t only,
// which the blocks computed, and write zeros above the diagonal: all of it in att (the saved
// output), in dpreatt (scratch) as far as the diagonal blocks that the next gemms read.
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

// The softmaxes take one warp per row of att, rows = B*NH*T, and run in place.
//
// When T % 8 == 0 every row is 16-byte aligned: lanes move packets of 8 (128 bits), packet p
// holding keys 8p..8p+7. The packets holding keys 0..t are the first t/8 + 1; the last of them
// may hold keys beyond t, which are masked element by element. Packets past it are zeros,
// written without being read.

// att holds q k^T on entry (keys 0..t are read, the rest may hold anything), the masked
// softmax(scale * q k^T) on exit, whole rows. Online softmax: one pass for the max and the sum
// of exponentials (the sum rescaled when a packet raises the max), one pass to write; the
// second read of a row mostly hits L2.
extern "C" __global__ void softmax_forward_x128(bf16* att, int rows, int T, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;   // the whole warp: the shuffles below see all 32 lanes
    int t = row % T, causal = t / 8 + 1;
    bf16* x = att + (size_t)row * T;
    float maxval = -INFINITY, sum = 0.0f;
    for (int p = lane; p < causal; p += 32) {
        x128 in = load128(x + 8 * p);
        float pmax = maxval;   // finite after this packet: its first key, 8p, is <= t
        for (int k = 0; k < x128::size; k++)
            if (8 * p + k <= t) pmax = fmaxf(pmax, scale * to_float(in[k]));
        sum *= expf(maxval - pmax);
        maxval = pmax;
        for (int k = 0; k < x128::size; k++)
            if (8 * p + k <= t) sum += expf(scale * to_float(in[k]) - maxval);
    }
    float row_max = warp_max(maxval);
    // lanes that saw no packet hold maxval = -inf and sum = 0: they add 0
    float norm = 1.0f / warp_sum(sum * expf(maxval - row_max));
    for (int p = lane; p < T / 8; p += 32) {
        x128 out;
        if (p < causal) {
            x128 in = load128cs(x + 8 * p);   // the row's last read
            for (int k = 0; k < x128::size; k++)
                out[k] = to_bf16(8 * p + k <= t ? expf(scale * to_float(in[k]) - row_max) * norm
                                                : 0.0f);
        } else {
            for (int k = 0; k < x128::size; k++) out[k] = to_bf16(0.0f);
        }
        store128(x + 8 * p, out);
    }
}

// datt holds dL/datt on entry (keys 0..t are read), dL/dpreatt on exit, where preatt = q k^T
// (the scale is applied here, as in the forward): dpreatt = scale * att * (datt - sum_j datt_j
// att_j). dpreatt is scratch that only the gemms read, so its zeros go only as far as they read:
// to the end of row t's block of `row_block` rows (a multiple of 8, or T).
extern "C" __global__ void softmax_backward_x128(bf16* datt, const bf16* att, int rows, int T,
                                                 int row_block, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = row % T, causal = t / 8 + 1;
    int written = min(T, (t / row_block + 1) * row_block) / 8;
    const bf16* a = att + (size_t)row * T;
    bf16* d = datt + (size_t)row * T;
    float dot = 0.0f;
    for (int p = lane; p < causal; p += 32) {
        x128 ap = load128(a + 8 * p), dp = load128(d + 8 * p);
        for (int k = 0; k < x128::size; k++)
            if (8 * p + k <= t) dot += to_float(ap[k]) * to_float(dp[k]);
    }
    dot = warp_sum(dot);
    for (int p = lane; p < written; p += 32) {
        x128 out;
        if (p < causal) {
            x128 ap = load128cs(a + 8 * p), dp = load128cs(d + 8 * p);   // the row's last reads
            for (int k = 0; k < x128::size; k++)
                out[k] = to_bf16(8 * p + k <= t ? scale * to_float(ap[k]) * (to_float(dp[k]) - dot)
                                                : 0.0f);
        } else {
            for (int k = 0; k < x128::size; k++) out[k] = to_bf16(0.0f);
        }
        store128(d + 8 * p, out);
    }
}

// The fallback for T % 8 != 0 (the sampler grows T one token at a time): rows are not 16-byte
// aligned, so lanes read single elements, strided by 32, which still coalesces. The same math
// as above; the rows are written whole.

extern "C" __global__ void softmax_forward(bf16* att, int rows, int T, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = row % T;
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
    float norm = 1.0f / warp_sum(sum * expf(maxval - row_max));
    for (int j = lane; j < T; j += 32)
        x[j] = j <= t ? to_bf16(expf(scale * to_float(x[j]) - row_max) * norm) : to_bf16(0.0f);
}

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
