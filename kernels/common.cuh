// Shared device helpers for llmpy's kernels: bf16 conversion, 128-bit packed loads and stores,
// warp and block reductions, stochastic rounding. Compiled at run time by NVRTC (cupy.RawModule)
// with the options in llmpy/cuda/runtime.py; the CPU CI compiles every kernel with nvcc too.
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

// NVRTC compiles without <math.h>, which is where INFINITY comes from under nvcc
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// 2^x in one instruction (MUFU.EX2), for softmaxes. ex2.approx (max relative error 2^-22, what
// expf itself ends in) with ftz: results below 2^-126 flush to 0, p < 1e-38 of a row's sum,
// invisible in a bf16 output or gradient; 2^-inf = 0. exp2f adds three instructions per call to
// get those denormal results right.
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// 16 bytes of T (8 bf16 or 4 floats), moved with one 128-bit instruction. Callers guarantee
// 16-byte alignment: every buffer is carved on 256-byte boundaries and the innermost sizes
// (C, 3C, 4C, Vp) are multiples of 8.
template <class T>
struct alignas(16) Packed128 {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
    __device__ __forceinline__ T& operator[](int i) { return v[i]; }
    __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};
typedef Packed128<bf16> x128;     // 8 bf16
typedef Packed128<float> f128;    // 4 floats

template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) {
    return *reinterpret_cast<const Packed128<T>*>(p);
}
// streaming load: read once, don't keep in cache
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
    return r;
}
template <class T>
__device__ __forceinline__ void store128(T* p, const Packed128<T>& x) {
    *reinterpret_cast<Packed128<T>*>(p) = x;
}
// streaming store: not read again soon, don't keep in cache
template <class T>
__device__ __forceinline__ void store128cs(T* p, const Packed128<T>& x) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&x));
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset));
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The order of additions is fixed by the thread layout, so the result is deterministic.
__device__ __forceinline__ float block_sum(float x) {
    __shared__ float partial[32];
    __syncthreads();   // partial may still be read by a previous call
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_sum(x);
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    x = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(x);
}
__device__ __forceinline__ float block_max(float x) {
    __shared__ float partial[32];
    __syncthreads();
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_max(x);
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    x = lane < warps ? partial[lane] : -INFINITY;
    return warp_max(x);
}

// A counter-based hash (integer mixing rounds): a random 32-bit number from (position, seed),
// so stochastic rounding needs no RNG state and is reproducible for a given seed.
__device__ __forceinline__ unsigned int hash32(unsigned int x, unsigned int seed) {
    x ^= seed * 0x9E3779B9u;
    x ^= x >> 16; x *= 0x7FEB352Du;
    x ^= x >> 15; x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

// fp32 -> bf16 rounding up with probability equal to the dropped fraction, so that many small
// AdamW updates to a bf16 weight are not all rounded away.
__device__ __forceinline__ bf16 stochastic_round(float x, unsigned int random) {
    unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) return __float2bfloat16_rn(x);   // inf, nan
    bits += random & 0xFFFFu;         // carries into the kept half with probability frac
    return __ushort_as_bfloat16((unsigned short)(bits >> 16));
}
