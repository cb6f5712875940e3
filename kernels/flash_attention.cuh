// Shared by kernels/flash_attention.cu and dev/cuda/flash_attention_v5.cu: tile sizes and the
// tensor-core building blocks of flash attention (head size 64, 64-row tiles, 4 warps).
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, q = lane % 4), one 32-bit register = 2 bf16:
//   A 16x16: a[0] = (row g, cols 2q..2q+1), a[1] = (row g+8, same cols), a[2] = (row g,
//            cols 8+2q..), a[3] = (row g+8, cols 8+2q..)
//   B 16x8:  b[0] = (rows 2q..2q+1, col g), b[1] = (rows 8+2q.., col g)
//   C 16x8:  c[0..1] = (row g, cols 2q, 2q+1), c[2..3] = (row g+8, cols 2q, 2q+1)
// A C tile of scores, converted to bf16, is exactly the A fragment of the next product, so the
// probabilities never leave registers. ldmatrix.x4 loads four 8x8 bf16 matrices, one per group
// of 8 lanes (lane 8i + r gives the address of row r of matrix i); each thread receives (row g,
// cols 2q..2q+1) of every matrix, or with .trans (rows 2q..2q+1, col g): whole A or B fragments.
#pragma once
#include "common.cuh"

#define HS 64          // head size
#define TILE 64        // query and key rows per tile; 4 warps x 16 rows
#define THREADS 128
#define STRIDE 72      // shared-memory row length in bf16: the 16-byte pad puts the 8 rows that
                       // one ldmatrix reads in 8 different bank groups
#define TILE_ELEMS (TILE * STRIDE)

typedef unsigned int u32;

// The attention mask: which keys each query sees. Every kernel asks these functions, and nothing
// else, which tiles to visit and which scores to mask, so a new mask (a sliding window, a prefix)
// is a change here and in llmpy/cpu.py's attention_mask. Tiles are 64 queries (query tile qt) by
// 64 keys (key tile kt), and `tiles` = ceil(T / 64). Causal: query i sees keys 0..i.
// Requirements a new mask must meet (or lift where the kernels assume them): the tiles a query
// tile sees are one run [key_tiles_begin(qt), key_tiles_end(qt)), and those that see a key tile
// one run [query_tiles_begin(kt), query_tiles_end(kt, tiles)), both moving forward with the tile;
// no key after its query is seen (ds_tile stores only the pairs kt <= qt); and every query row
// sees a key in the first tile it visits (softmax_tile's running max is finite from its first).
__device__ __forceinline__ bool sees(int query, int key) { return key <= query; }
__device__ __forceinline__ int key_tiles_begin(int qt) { return 0; }
__device__ __forceinline__ int key_tiles_end(int qt) { return qt + 1; }
__device__ __forceinline__ int query_tiles_begin(int kt) { return kt; }
__device__ __forceinline__ int query_tiles_end(int kt, int tiles) { return tiles; }
// whether tile pair (qt, kt), one the ranges above visit, holds pairs the mask hides: only those
// tiles pay for sees() on every score
__device__ __forceinline__ bool partly_masked(int qt, int kt) { return kt == qt; }

// The backward's dS tiles, written by the dK/dV kernel and read by the dQ kernel: (B*NH, pairs,
// 64 keys, 64 queries) bf16, pair (qt, kt) at qt*(qt+1)/2 + kt, so one query tile's pairs are
// contiguous in kt. The element offset of tile (qt, kt) of head bh:
__device__ __forceinline__ size_t ds_tile(int bh, int tiles, int qt, int kt) {
    return ((size_t)bh * (tiles * (tiles + 1) / 2) + qt * (qt + 1) / 2 + kt) * TILE * TILE;
}

__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix(u32* r, const bf16* p) {
    u32 addr = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_trans(u32* r, const bf16* p) {
    u32 addr = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ u32 pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&h);
}

// 16 bytes global -> shared without passing through registers; src_size 0 writes zeros
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, bool valid) {
    u32 addr = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(addr), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>   // wait until at most N of this thread's committed groups are still in flight
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

// start copying rows t0..t0+63 of one head (64 bf16 each, `stride` apart in global memory) into
// shared memory; rows past T become zeros, so padded queries and keys contribute nothing
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* src, int stride, int t0, int T) {
    for (int p = threadIdx.x; p < TILE * HS / 8; p += THREADS) {
        int r = p / 8, c = (p % 8) * 8;
        bool valid = t0 + r < T;
        cp_async16(tile + r * STRIDE + c, valid ? src + (size_t)(t0 + r) * stride + c : src, valid);
    }
}

// One step of the mma.sync kernels' double buffers: while tiles remain (`more`), start copying
// the next one into the other buffer (load_next issues the copies: one commit group), then wait
// for the current tile's group and for every thread's copies of it (block barrier)
template <class LoadNext>
__device__ __forceinline__ void double_buffer_step(bool more, LoadNext load_next) {
    if (more) {
        load_next();
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

// One key tile of the forward's online softmax, on a warp's 16 x 64 C-layout scores s = q.k
// (this thread: rows[0] and rows[1], keys k0 + 8*nt + 2q (+1)): on a partly masked tile (masked),
// the keys a row does not see set to -inf; the running max m and denominator l (this lane's part, both in log2 units of
// s * scale_log2) move to the new max, o is rescaled, and s becomes the probabilities
// exp2(s * scale_log2 - m). The max is taken on the raw scores (scale_log2 > 0, so max(s) *
// scale_log2 rounds to max(s * scale_log2)), and each probability is one FFMA and one MUFU.EX2.
__device__ __forceinline__ void softmax_tile(float (*s)[4], float (*o)[4], float* m, float* l,
                                             int k0, const int* rows, bool masked,
                                             float scale_log2) {
    int q = threadIdx.x % 4;
    float mx[2] = {-INFINITY, -INFINITY};
    for (int nt = 0; nt < 8; nt++)
        for (int e = 0; e < 4; e++) {
            if (masked && !sees(rows[e / 2], k0 + nt * 8 + 2 * q + e % 2)) s[nt][e] = -INFINITY;
            mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);     // the hidden keys masked above
        }
    float alpha[2], neg_m[2];
    for (int r = 0; r < 2; r++) {              // a row's 64 scores sit in 4 lanes of a quad
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 2));
        // every row sees a key of the first tile it visits (the mask's requirement), so the new
        // max is finite from that tile on; m = -inf before it: alpha = 2^-inf = 0
        float mnew = fmaxf(m[r], mx[r] * scale_log2);
        alpha[r] = exp2_ftz(m[r] - mnew);
        m[r] = mnew;
        neg_m[r] = -mnew;
        l[r] *= alpha[r];
    }
    for (int nt = 0; nt < 8; nt++)
        for (int e = 0; e < 4; e++) {
            o[nt][e] *= alpha[e / 2];
            s[nt][e] = exp2_ftz(fmaf(s[nt][e], scale_log2, neg_m[e / 2]));
            l[e / 2] += s[nt][e];              // this lane's part of the row sum
        }
}

// The forward's end for this thread's two rows of head h of batch b (bh = b * NH + h, C = NH * 64):
// the lanes' parts of l summed over the quad, out = o / l in bf16 and lse = m + log2(l), rows past
// T not written
__device__ __forceinline__ void store_output(bf16* out, float* lse, float (*o)[4], const float* m,
                                             float* l, const int* rows, int b, int h, int bh,
                                             int T, int C) {
    int q = threadIdx.x % 4;
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
    }
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= T) continue;
        bf16* dst = out + ((size_t)b * T + rows[r]) * C + h * HS + 2 * q;
        for (int nt = 0; nt < 8; nt++)
            *reinterpret_cast<u32*>(dst + nt * 8) = pack(o[nt][2 * r] / l[r], o[nt][2 * r + 1] / l[r]);
        if (q == 0) lse[(size_t)bh * T + rows[r]] = m[r] + log2f(l[r]);
    }
}

// The qkv matmul's bias gradient, taken where dqkv is written: each backward block adds up the
// 64 rows of one head's dQ, dK or dV that a warpgroup writes (bf16 of mul * the accumulator, as
// stored; rows past T left out) into 64 columns at dst, its row b*tiles + tile of bias_partial
// (B*tiles, 3C) fp32; matmul.cu's bias_backward_finish then sums those rows in order. c: each
// warp's 16 x 64 C fragments (rows g and g+8 of this thread), 4 warps a warpgroup; red: 256
// floats of shared memory a warpgroup that nothing else is using. Every thread of the block
// calls it (it has block barriers); a warpgroup with nothing to add passes dst = NULL. The sums
// run in a fixed order (the two rows, the 8 row groups by shuffles, then the warps).
__device__ __forceinline__ void column_sums(float* dst, float (*c)[4], float mul, bool row0_valid,
                                            bool row1_valid, float* red) {
    int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, q = lane % 4;
    for (int nt = 0; nt < 8; nt++)
        for (int j = 0; j < 2; j++) {
            float v = (row0_valid ? to_float(to_bf16(mul * c[nt][j])) : 0.0f) +
                      (row1_valid ? to_float(to_bf16(mul * c[nt][2 + j])) : 0.0f);
            for (int offset = 4; offset < 32; offset *= 2) v += __shfl_xor_sync(0xffffffff, v, offset);
            if (lane < 4) red[warp * 64 + nt * 8 + 2 * q + j] = v;
        }
    __syncthreads();
    if (dst && tid < 64)
        dst[tid] = red[tid] + red[64 + tid] + red[128 + tid] + red[192 + tid];
    __syncthreads();                           // red may be used again
}

// A fragments of rows row0..row0+15 of a (64, 64) tile, 4 k-steps of 16 columns
__device__ __forceinline__ void load_a(u32 (*a)[4], const bf16* tile, int row0) {
    int m = threadIdx.x % 32 / 8, r = threadIdx.x % 8;
    for (int ks = 0; ks < 4; ks++)
        ldmatrix(a[ks], tile + (row0 + (m % 2) * 8 + r) * STRIDE + ks * 16 + (m / 2) * 8);
}

// A fragments of the transposed tile's rows col0..col0+15 (columns col0.. of the tile, 4 k-steps
// of 16 of its rows): ldmatrix.trans hands each thread (rows 2q..2q+1, col g) of a stored 8x8
// matrix, which is (row g, cols 2q..2q+1) of the transpose
__device__ __forceinline__ void load_a_trans(u32 (*a)[4], const bf16* tile, int col0) {
    int m = threadIdx.x % 32 / 8, r = threadIdx.x % 8;
    for (int ks = 0; ks < 4; ks++)
        ldmatrix_trans(a[ks], tile + (ks * 16 + (m / 2) * 8 + r) * STRIDE + col0 + (m % 2) * 8);
}

// C-layout floats (16 x 64) -> bf16 A fragments (16 x 64)
__device__ __forceinline__ void to_a(u32 (*a)[4], float (*c)[4]) {
    for (int ks = 0; ks < 4; ks++) {
        a[ks][0] = pack(c[2 * ks][0], c[2 * ks][1]);
        a[ks][1] = pack(c[2 * ks][2], c[2 * ks][3]);
        a[ks][2] = pack(c[2 * ks + 1][0], c[2 * ks + 1][1]);
        a[ks][3] = pack(c[2 * ks + 1][2], c[2 * ks + 1][3]);
    }
}

// acc (16 x 64) = A (16 x 64) @ tile^T, tile (64 rows = output columns, 64) row-major: a B
// fragment (k = column of tile, n = row of tile) is a non-transposed 8x8 matrix of the tile
__device__ __forceinline__ void mul_abt(float (*acc)[4], u32 (*a)[4], const bf16* tile) {
    int m = threadIdx.x % 32 / 8, r = threadIdx.x % 8;
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    for (int np = 0; np < 4; np++)            // pairs of 8-column n-tiles
        for (int ks = 0; ks < 4; ks++) {
            u32 b[4];
            ldmatrix(b, tile + (np * 16 + (m / 2) * 8 + r) * STRIDE + ks * 16 + (m % 2) * 8);
            mma(acc[2 * np], a[ks], b[0], b[1]);
            mma(acc[2 * np + 1], a[ks], b[2], b[3]);
        }
}

// acc (16 x 64) += A (16 x 64) @ tile, tile (64 = k, 64 = n) row-major: B through ldmatrix.trans
__device__ __forceinline__ void mul_ab(float (*acc)[4], u32 (*a)[4], const bf16* tile) {
    int m = threadIdx.x % 32 / 8, r = threadIdx.x % 8;
    for (int ks = 0; ks < 4; ks++)
        for (int np = 0; np < 4; np++) {
            u32 b[4];
            ldmatrix_trans(b, tile + (ks * 16 + (m % 2) * 8 + r) * STRIDE + np * 16 + (m / 2) * 8);
            mma(acc[2 * np], a[ks], b[0], b[1]);
            mma(acc[2 * np + 1], a[ks], b[2], b[3]);
        }
}
