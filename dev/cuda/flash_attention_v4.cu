// Version 4 of dev/cuda/attention.py, kept for comparison: llmpy's first flash attention (now
// kernels/flash_attention.cu). Its backward runs two kernels that each recompute P and dP, one
// per key tile (dK, dV) and one per query tile (dQ): 7 tile products per tile pair instead of 5.
// (Its delta kernel is llmpy's, kernels/flash_attention.cu.)
// Causal flash attention (FlashAttention-2's algorithm) on bf16 tensor cores (mma.sync m16n8k16),
// forward and backward, for head size 64 (every GPT-2 size has C / NH = 64).
//
// Layouts, row-major, hs = 64, C = NH * hs:
//   qkv, dqkv (B, T, 3, NH, hs)   q, k, v side by side, each split into NH heads
//   out, dout (B, T, NH, hs)       heads concatenated
//   lse (B, NH, T) fp32            log2 of the softmax denominator of each query row, in the
//                                  units of the scaled scores s = q.k * scale * log2(e), so that
//                                  p = exp2(s - lse): the only state the backward needs
//   delta (B, NH, T) fp32          sum_d dout * out per query row (backward's preprocessing)
// No (T, T) matrix ever reaches memory: a block holds one 64-row tile of queries (forward, dq)
// or keys (dk, dv) and streams the other side through shared memory in 64-row tiles, skipping
// the tiles above the diagonal. Every sum runs in a fixed order: no atomics, deterministic.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, q = lane % 4), one 32-bit register = 2 bf16:
//   A 16x16: a[0] = (row g, cols 2q..2q+1), a[1] = (row g+8, same cols), a[2] = (row g,
//            cols 8+2q..), a[3] = (row g+8, cols 8+2q..)
//   B 16x8:  b[0] = (rows 2q..2q+1, col g), b[1] = (rows 8+2q.., col g)
//   C 16x8:  c[0..1] = (row g, cols 2q, 2q+1), c[2..3] = (row g+8, cols 2q, 2q+1)
// A C tile of scores, converted to bf16, is exactly the A fragment of the next product, so the
// probabilities never leave registers.
#include "common.cuh"

#define HS 64          // head size
#define TILE 64        // query and key rows per tile; 4 warps x 16 rows
#define THREADS 128
#define STRIDE 72      // shared-memory row length in bf16: the 16-byte pad puts the 8 rows that
                       // one fragment load touches in 8 different bank groups

typedef unsigned int u32;

__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices from shared memory, transposed: thread 8i+r gives the address of row r
// of matrix i; register i receives matrix i's (rows 2q, 2q+1; col g), i.e. a B fragment of a
// row-major (k, n) tile.
__device__ __forceinline__ void ldmatrix_trans(u32* r, const bf16* p) {
    u32 addr = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ u32 ld32(const bf16* p) { return *reinterpret_cast<const u32*>(p); }

__device__ __forceinline__ u32 pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&h);
}

// rows t0..t0+63 of one head (64 bf16 each, `stride` apart in global memory) into shared
// memory; rows past T are zeros, so padded queries and keys contribute nothing
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* src, int stride, int t0, int T) {
    for (int p = threadIdx.x; p < TILE * HS / 8; p += THREADS) {
        int r = p / 8, c = (p % 8) * 8;
        int4 v = make_int4(0, 0, 0, 0);
        if (t0 + r < T) v = *reinterpret_cast<const int4*>(src + (size_t)(t0 + r) * stride + c);
        *reinterpret_cast<int4*>(tile + r * STRIDE + c) = v;
    }
}

// A fragments of a warp's 16 rows (row0..row0+15) of a (64, 64) tile: 4 k-steps of 16 columns
__device__ __forceinline__ void load_a(u32 (*f)[4], const bf16* tile, int row0) {
    int g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    for (int ks = 0; ks < 4; ks++) {
        const bf16* p = tile + (row0 + g) * STRIDE + ks * 16 + 2 * q;
        f[ks][0] = ld32(p);
        f[ks][1] = ld32(p + 8 * STRIDE);
        f[ks][2] = ld32(p + 8);
        f[ks][3] = ld32(p + 8 * STRIDE + 8);
    }
}

// acc (16 x 64) = A (16 x 64, fragments) @ tile^T, where tile is (64 rows = output columns, 64)
// row-major: the B fragment (k = column of tile, n = row of tile) is two adjacent bf16 of a row
__device__ __forceinline__ void mul_abt(float (*acc)[4], u32 (*a)[4], const bf16* tile) {
    int g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    for (int nt = 0; nt < 8; nt++) {
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
        for (int ks = 0; ks < 4; ks++) {
            const bf16* p = tile + (nt * 8 + g) * STRIDE + ks * 16 + 2 * q;
            mma(acc[nt], a[ks], ld32(p), ld32(p + 8));
        }
    }
}

// acc (16 x 64) += P (16 x 64, C-layout floats, rounded to bf16 here) @ tile, where tile is
// (64 = k, 64 = n) row-major: B fragments through ldmatrix.trans
__device__ __forceinline__ void mul_pb(float (*acc)[4], float (*p)[4], const bf16* tile) {
    int lane = threadIdx.x % 32;
    for (int ks = 0; ks < 4; ks++) {
        u32 a[4] = {pack(p[2 * ks][0], p[2 * ks][1]), pack(p[2 * ks][2], p[2 * ks][3]),
                    pack(p[2 * ks + 1][0], p[2 * ks + 1][1]), pack(p[2 * ks + 1][2], p[2 * ks + 1][3])};
        for (int np = 0; np < 4; np++) {      // pairs of 8-column n-tiles
            u32 b[4];
            int m = lane / 8, r = lane % 8;   // this thread addresses row r of matrix m
            ldmatrix_trans(b, tile + (ks * 16 + (m % 2) * 8 + r) * STRIDE + np * 16 + (m / 2) * 8);
            mma(acc[2 * np], a, b[0], b[1]);
            mma(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// forward: grid (T/64 query tiles, B*NH); each warp owns 16 query rows and keeps a running max
// m, a running denominator l and the output accumulator o in registers (online softmax).

extern "C" __global__ void __launch_bounds__(THREADS)
flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
    __shared__ __align__(16) bf16 Qs[TILE * STRIDE], Ks[TILE * STRIDE], Vs[TILE * STRIDE];
    int qt = gridDim.x - 1 - blockIdx.x;       // the longest rows (most key tiles) start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    int q0 = qt * TILE;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};   // this thread's two query rows

    load_tile(Qs, qp, 3 * C, q0, T);
    __syncthreads();
    u32 qf[4][4];
    load_a(qf, Qs, warp * 16);

    float o[8][4] = {}, s[8][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int kt = 0; kt <= qt; kt++) {
        int k0 = kt * TILE;
        __syncthreads();                       // everyone is done with the previous K, V
        load_tile(Ks, qp + C, 3 * C, k0, T);
        load_tile(Vs, qp + 2 * C, 3 * C, k0, T);
        __syncthreads();
        mul_abt(s, qf, Ks);
        float mnew[2] = {m[0], m[1]};
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int key = k0 + nt * 8 + 2 * q + e % 2;
                float x = s[nt][e] * scale_log2;
                if (kt == qt && key > rows[e / 2]) x = -INFINITY;     // the future
                s[nt][e] = x;
                mnew[e / 2] = fmaxf(mnew[e / 2], x);
            }
        for (int r = 0; r < 2; r++) {          // a row's 64 scores sit in 4 lanes of a quad
            mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffff, mnew[r], 1));
            mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffff, mnew[r], 2));
        }
        // key k0 <= every row of this tile is visible, so mnew is finite from the first tile on
        float alpha[2] = {exp2f(m[0] - mnew[0]), exp2f(m[1] - mnew[1])};
        for (int r = 0; r < 2; r++) { m[r] = mnew[r]; l[r] *= alpha[r]; }
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                o[nt][e] *= alpha[e / 2];
                s[nt][e] = exp2f(s[nt][e] - m[e / 2]);
                l[e / 2] += s[nt][e];          // this lane's part of the row sum
            }
        mul_pb(o, s, Vs);
    }
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

// ---------------------------------------------------------------------------------------------
// backward. With P = softmax(scale * Q K^T) and dP = dO V^T, the score gradient is
// dS = P * (dP - delta), delta = rowsum(dO * O); then dQ = scale dS K, dK = scale dS^T Q,
// dV = P^T dO. Two kernels, each owning what it writes, so nothing needs atomics: one per key
// tile (dK, dV: loops over the query tiles below the diagonal), one per query tile (dQ: loops
// over the key tiles), each recomputing P from the saved lse.

// dK, dV for one key tile: each warp owns 16 keys and computes the transposed products
// S^T = K Q^T, dP^T = V dO^T for the 64 queries of each tile, so that P^T and dS^T come out
// in C layout, ready to be the A operands of dV += P^T dO and dK += dS^T Q.
extern "C" __global__ void __launch_bounds__(THREADS)
flash_attention_backward_dkdv(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                              const float* delta, int T, int NH, float scale, float scale_log2) {
    __shared__ __align__(16) bf16 Qs[TILE * STRIDE], dOs[TILE * STRIDE];
    __shared__ float lse_s[TILE], delta_s[TILE];
    int kt = blockIdx.x;                       // key tile 0 sees the most query tiles: first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    const bf16* dop = dout + (size_t)b * T * C + h * HS;
    int k0 = kt * TILE;
    int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

    u32 kf[4][4], vf[4][4];                    // this warp's K and V rows, staged through Qs/dOs
    load_tile(Qs, qp + C, 3 * C, k0, T);
    load_tile(dOs, qp + 2 * C, 3 * C, k0, T);
    __syncthreads();
    load_a(kf, Qs, warp * 16);
    load_a(vf, dOs, warp * 16);

    float dk[8][4] = {}, dv[8][4] = {}, p[8][4], dp[8][4];
    int tiles = (T + TILE - 1) / TILE;
    for (int qt = kt; qt < tiles; qt++) {
        int q0 = qt * TILE;
        __syncthreads();
        load_tile(Qs, qp, 3 * C, q0, T);
        load_tile(dOs, dop, C, q0, T);
        for (int i = threadIdx.x; i < TILE; i += THREADS) {
            bool valid = q0 + i < T;           // padded queries: p = exp2(-inf) = 0
            lse_s[i] = valid ? lse[(size_t)bh * T + q0 + i] : INFINITY;
            delta_s[i] = valid ? delta[(size_t)bh * T + q0 + i] : 0.0f;
        }
        __syncthreads();
        mul_abt(p, kf, Qs);                    // S^T: rows = keys, columns = queries
        mul_abt(dp, vf, dOs);                  // dP^T
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int col = nt * 8 + 2 * q + e % 2, query = q0 + col;
                float pe = exp2f(p[nt][e] * scale_log2 - lse_s[col]);
                if (qt == kt && query < keys[e / 2]) pe = 0.0f;     // the key is in its future
                p[nt][e] = pe;
                dp[nt][e] = pe * (dp[nt][e] - delta_s[col]);         // dS^T
            }
        mul_pb(dv, p, dOs);
        mul_pb(dk, dp, Qs);
    }
    for (int r = 0; r < 2; r++) {
        if (keys[r] >= T) continue;
        bf16* dst = dqkv + ((size_t)b * T + keys[r]) * 3 * C + h * HS + 2 * q;
        for (int nt = 0; nt < 8; nt++) {
            *reinterpret_cast<u32*>(dst + C + nt * 8) = pack(scale * dk[nt][2 * r], scale * dk[nt][2 * r + 1]);
            *reinterpret_cast<u32*>(dst + 2 * C + nt * 8) = pack(dv[nt][2 * r], dv[nt][2 * r + 1]);
        }
    }
}

// dQ for one query tile: each warp owns 16 queries, recomputes P and dS for every key tile up
// to the diagonal and accumulates dQ += dS K.
extern "C" __global__ void __launch_bounds__(THREADS)
flash_attention_backward_dq(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                            const float* delta, int T, int NH, float scale, float scale_log2) {
    __shared__ __align__(16) bf16 Ks[TILE * STRIDE], Vs[TILE * STRIDE];
    int qt = gridDim.x - 1 - blockIdx.x;
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    const bf16* dop = dout + (size_t)b * T * C + h * HS;
    int q0 = qt * TILE;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    float row_lse[2], row_delta[2];
    for (int r = 0; r < 2; r++) {
        bool valid = rows[r] < T;
        row_lse[r] = valid ? lse[(size_t)bh * T + rows[r]] : INFINITY;
        row_delta[r] = valid ? delta[(size_t)bh * T + rows[r]] : 0.0f;
    }

    u32 qf[4][4], dof[4][4];                   // this warp's Q and dO rows, staged through Ks/Vs
    load_tile(Ks, qp, 3 * C, q0, T);
    load_tile(Vs, dop, C, q0, T);
    __syncthreads();
    load_a(qf, Ks, warp * 16);
    load_a(dof, Vs, warp * 16);

    float dq[8][4] = {}, p[8][4], dp[8][4];
    for (int kt = 0; kt <= qt; kt++) {
        int k0 = kt * TILE;
        __syncthreads();
        load_tile(Ks, qp + C, 3 * C, k0, T);
        load_tile(Vs, qp + 2 * C, 3 * C, k0, T);
        __syncthreads();
        mul_abt(p, qf, Ks);                    // S
        mul_abt(dp, dof, Vs);                  // dP = dO V^T
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int key = k0 + nt * 8 + 2 * q + e % 2;
                float pe = exp2f(p[nt][e] * scale_log2 - row_lse[e / 2]);
                if (kt == qt && key > rows[e / 2]) pe = 0.0f;
                dp[nt][e] = pe * (dp[nt][e] - row_delta[e / 2]);     // dS
            }
        mul_pb(dq, dp, Ks);
    }
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= T) continue;
        bf16* dst = dqkv + ((size_t)b * T + rows[r]) * 3 * C + h * HS + 2 * q;
        for (int nt = 0; nt < 8; nt++)
            *reinterpret_cast<u32*>(dst + nt * 8) = pack(scale * dq[nt][2 * r], scale * dq[nt][2 * r + 1]);
    }
}
