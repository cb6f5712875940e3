// AdamW on one tensor of N elements (decoupled weight decay, bias-corrected; llmpy/cpu.py's math):
//   g = grad * grad_scale        (grad_scale: gradient clipping's factor, read from device memory,
//                                 where kernels/global_norm.cu leaves it)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay p),
//        mhat = m * bias_correction1, vhat = v * bias_correction2, with 1/(1 - beta^step) for each
// p is the fp32 master weight where there is one (master != NULL), else the bf16 param read as
// fp32. The bf16 param is then written from the new p with stochastic rounding, its random bits
// hash32(element index, seed): reproducible for a seed, and unbiased, so updates smaller than
// half a bf16 step still move the weight on average. The host computes (1 - beta) and the bias
// corrections in fp64. param, grad bf16; m, v, master fp32; N a multiple of 4.
//
// Memory-bound: 28 bytes per element with master weights (grad 2; m, v, master read and written,
// 24; param written, 2), so the kernel is about keeping enough bytes in flight:
// - each thread updates QUADS quads of 4 elements, and issues every load of all its quads before
//   any arithmetic or store (__restrict__: the compiler may keep the loads together), ~112 bytes
//   in flight per thread;
// - a block covers QUADS * 4 * blockDim consecutive elements, in QUADS sweeps of one quad per
//   thread, so that each warp instruction moves 512 contiguous bytes of an fp32 array (one f128
//   per thread) and 256 of a bf16 array (8 bytes per thread): every 32-byte sector fully used;
// - streaming hints (.cs) on every access: nothing here is read again before the next step.
// The per-element arithmetic is the same as version 1's (dev/cuda/adamw.cu): the same bits.
#include "common.cuh"

#define QUADS 2

// 4 bf16, moved with one 8-byte access
struct alignas(8) bf16x4 { bf16 v[4]; };

__device__ __forceinline__ bf16x4 load64cs(const bf16* p) {
    bf16x4 r;
    *reinterpret_cast<uint2*>(&r) = __ldcs(reinterpret_cast<const uint2*>(p));
    return r;
}
__device__ __forceinline__ void store64cs(bf16* p, const bf16x4& x) {
    __stcs(reinterpret_cast<uint2*>(p), *reinterpret_cast<const uint2*>(&x));
}

extern "C" __global__ void __launch_bounds__(1024)
adamw_update(bf16* __restrict__ param, const bf16* __restrict__ grad, float* __restrict__ m,
             float* __restrict__ v, float* __restrict__ master, int N, float lr, float beta1,
             float beta2, float one_minus_beta1, float one_minus_beta2, float bias_correction1,
             float bias_correction2, float eps, float weight_decay,
             const float* __restrict__ grad_scale, unsigned int seed) {
    float scale = *grad_scale;
    int first = blockIdx.x * blockDim.x * 4 * QUADS + threadIdx.x * 4;   // this thread's quad 0
    bf16x4 g16[QUADS], p16[QUADS];
    f128 mq[QUADS], vq[QUADS], pq[QUADS];
    // both loops unrolled, so that the quads stay in registers
    #pragma unroll
    for (int q = 0; q < QUADS; q++) {
        int e = first + q * blockDim.x * 4;
        if (e < N) {
            g16[q] = load64cs(grad + e);
            mq[q] = load128cs(m + e);
            vq[q] = load128cs(v + e);
            if (master != nullptr) pq[q] = load128cs(master + e);
            else p16[q] = load64cs(param + e);
        }
    }
    #pragma unroll
    for (int q = 0; q < QUADS; q++) {
        int e = first + q * blockDim.x * 4;
        if (e < N) {
            bf16x4 out;
            for (int k = 0; k < 4; k++) {
                float p = master != nullptr ? pq[q][k] : to_float(p16[q].v[k]);
                float g = to_float(g16[q].v[k]) * scale;
                mq[q][k] = beta1 * mq[q][k] + one_minus_beta1 * g;
                vq[q][k] = beta2 * vq[q][k] + one_minus_beta2 * (g * g);
                float mhat = mq[q][k] * bias_correction1, vhat = vq[q][k] * bias_correction2;
                p -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
                pq[q][k] = p;
                out.v[k] = stochastic_round(p, hash32(e + k, seed));
            }
            store128cs(m + e, mq[q]);
            store128cs(v + e, vq[q]);
            if (master != nullptr) store128cs(master + e, pq[q]);
            store64cs(param + e, out);
        }
    }
}
