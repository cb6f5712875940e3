// The FP8 casts' helpers, shared by kernels/fp8.cu and dev/cuda/fp8_cast_v1.cu: a value's
// conversion (scaled fp32 -> E4M3 or E5M2 byte, saturating) and a block's largest |x|.
#pragma once
#include "common.cuh"
#include <cuda_fp8.h>

typedef unsigned char fp8;

template <__nv_fp8_interpretation_t FORMAT>
__device__ __forceinline__ fp8 to_fp8(float x) {
    return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, FORMAT);
}

// Non-negative floats order as their bit patterns do as unsigned ints, NaN (0x7fc00000) above
// inf: the largest |x| is an integer max, and a NaN anywhere makes the recorded value NaN (the
// scale update then keeps the old scale). One atomicMax per block into *amax.
__device__ __forceinline__ void record_amax(float* amax, unsigned int bits) {
    __shared__ unsigned int partial[32];
    int thread = threadIdx.y * blockDim.x + threadIdx.x;
    int lane = thread % 32, warp = thread / 32, warps = blockDim.x * blockDim.y / 32;
    bits = __reduce_max_sync(0xffffffff, bits);
    if (lane == 0) partial[warp] = bits;
    __syncthreads();
    if (warp == 0) {
        bits = __reduce_max_sync(0xffffffff, lane < warps ? partial[lane] : 0u);
        if (lane == 0) atomicMax(reinterpret_cast<unsigned int*>(amax), bits);
    }
}

__device__ __forceinline__ unsigned int abs_bits(float x) { return __float_as_uint(x) & 0x7fffffffu; }
