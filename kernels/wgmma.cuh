// Hopper's warpgroup tensor-core instructions (wgmma.mma_async, sm_90a only) for flash attention
// at head size 64: 128-byte-swizzled shared-memory tiles, their matrix descriptors, and the
// 64x64x16 products with A from shared memory or registers. Used by
// kernels/flash_attention_wgmma.cu.
//
// Shared-memory layout: every tile is rows of 64 bf16 = 128 bytes in wgmma's 128-byte swizzle:
// 16-byte chunk c of row r lies at r*128 + 16*(c ^ r%8), the tile starting on a 1024-byte
// boundary (the hardware applies the XOR to address bits 4-6 from bits 7-9, so the pattern must
// line up with the address). Each 8-row group is one 1024-byte swizzle atom; the copies write
// whole rows (8 consecutive threads, one 128-byte line each: no bank conflicts).
// Descriptors (64 bits): start address >> 4 in bits 0-13, leading byte offset >> 4 in 16-29,
// stride byte offset >> 4 in 32-45, base offset 0 (atoms 1024-aligned), swizzle mode 1 (128 B)
// in bits 62-63. K-major operands (rows = M or N, the 64 columns = K): SBO = 1024 between 8-row
// groups, LBO unused; a k-step of 16 elements is 32 bytes inside the swizzled row, so the start
// address moves by 32 bytes (the hardware swizzles the final address). N-major operands (rows =
// K, columns = N, read with the transpose bit): SBO = 1024 between groups of 8 rows, LBO = the
// distance between 64-column atoms, unused at N = 64; a k-step of 16 rows moves the start by
// 2048 bytes. Both offsets are set to 1024, right whichever of the two the hardware takes as
// the 8-row stride.
#pragma once
#include "flash_attention.cuh"

#define ROW_BYTES (HS * 2)         // one swizzled row: 64 bf16 = 128 bytes

typedef unsigned long long u64;

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// the first 1024-byte boundary at or after p: where the swizzled tiles start
__device__ __forceinline__ bf16* align_1024(unsigned char* p) {
    return reinterpret_cast<bf16*>(p + (1024 - smem_addr(p) % 1024) % 1024);
}

// start copying rows t0..t0+rows-1 of one head into a swizzled tile, `threads` threads taking
// part; rows past T become zeros
__device__ __forceinline__ void load_tile_sw(bf16* tile, const bf16* src, int stride, int t0,
                                             int rows, int T, int threads) {
    for (int p = threadIdx.x; p < rows * 8; p += threads) {
        int r = p / 8, c = p % 8;
        bool valid = t0 + r < T;
        cp_async16(tile + r * HS + (c ^ (r % 8)) * 8, valid ? src + (size_t)(t0 + r) * stride + c * 8 : src,
                   valid);
    }
}

// the matrix descriptor of a swizzled tile starting at `tile` (fields: the comment at the top)
__device__ __forceinline__ u64 make_desc(const bf16* tile) {
    const u64 offsets = 1024 >> 4;
    return (u64)((smem_addr(tile) & 0x3FFFF) >> 4) | offsets << 16 | offsets << 32 | 1ull << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>   // until at most N of this warpgroup's committed groups are still running
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }
// the accumulators are written asynchronously: an empty asm that "rewrites" each register after
// the wait keeps the compiler from moving their reads (or writes) above it
__device__ __forceinline__ void fence_acc(float (*d)[4]) {
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) asm volatile("" : "+f"(d[i][j]) :: "memory");
}
// cp.async writes shared memory through the generic proxy, wgmma reads it through the async proxy
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// The top of each iteration of a loop over tiles streamed through STAGES shared-memory stages,
// one cp.async commit group a tile (empty past the last): this thread's copies of the tile due
// now have landed, fenced so that wgmma (the async proxy) sees them, and the barrier makes that
// everyone's; past it every thread has also finished the previous tile, so the stage that tile
// used may be refilled (with the tile STAGES - 1 ahead).
template <int STAGES>
__device__ __forceinline__ void stage_ready() {
    cp_async_wait<STAGES - 2>();
    fence_proxy_async();
    __syncthreads();
}

#define ACC4(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define ACC32(d) ACC4(d, 0), ACC4(d, 1), ACC4(d, 2), ACC4(d, 3), ACC4(d, 4), ACC4(d, 5), ACC4(d, 6), ACC4(d, 7)
#define D32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
            "%23,%24,%25,%26,%27,%28,%29,%30,%31}"

// d (64 x 64, f32) = (accumulate ? d : 0) + A B, A and B in shared memory: both K-major, or
// with TRANS = 1 both MN-major (A M-major, B N-major), read with the transpose bits
template <int TRANS = 0>
__device__ __forceinline__ void wgmma_ss(float (*d)[4], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " D32 ", %32, %33, p, 1, 1, %35, %35;\n}\n"
                 : ACC32(d) : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS) : "memory");
}

// d += A B, A (this warp's 16 rows x 16) in registers, B N-major in shared memory (transposed)
__device__ __forceinline__ void wgmma_rs(float (*d)[4], const u32* a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " D32 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
                 : ACC32(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1) : "memory");
}
