// Versions 7-9 of dev/cuda/attention.py, frozen whole: kernels/flash_attention.cu as of commit
// bbe77f5, the code those versions were measured with (7 and 8 at 597f763, 9 at e31c6b4; 61a5c33
// only moved its tile helpers into kernels/flash_attention.cuh, which it includes). Version 8 is
// this file compiled with -DDKDV_BLOCKS_PER_SM=2, 9 with -DFORWARD_BLOCKS_PER_SM=4. Its backward
// recomputes S and dP in the dQ kernel (7 tile products per tile pair); llmpy's since version 10
// reads the dS tiles its dK/dV kernel stores instead.
//
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
// No (T, T) matrix ever reaches memory: a block holds one 64-row tile of queries (forward, dQ)
// or keys (dK, dV) and streams the other side through shared memory in 64-row tiles, skipping
// the tiles above the diagonal, the next tile's copy (cp.async) in flight while the current one
// is used. Every sum runs in a fixed order, so the results are the same bits run to run.
//
#include "flash_attention.cuh"

// dK/dV kernel's occupancy target: 3 blocks per SM cap it at 168 registers a thread (a few
// spills); at 2 it takes ~244 and its backward is 8% slower on the H200 (dev/cuda/attention.py)
#ifndef DKDV_BLOCKS_PER_SM
#define DKDV_BLOCKS_PER_SM 3
#endif
// the forward's: uncapped it takes ~134 registers (3 blocks per SM); -DFORWARD_BLOCKS_PER_SM=4
// caps it at 128 (dev/cuda/attention.py version 9)
#ifdef FORWARD_BLOCKS_PER_SM
#define FORWARD_BOUNDS __launch_bounds__(THREADS, FORWARD_BLOCKS_PER_SM)
#else
#define FORWARD_BOUNDS __launch_bounds__(THREADS)
#endif

// ---------------------------------------------------------------------------------------------
// forward: grid (T/64 query tiles, B*NH); each warp owns 16 query rows and keeps a running max
// m, a running denominator l and the output accumulator o in registers (online softmax).
// K and V tiles are double-buffered: tile kt+1 is copied while tile kt is used.

extern "C" __global__ void FORWARD_BOUNDS
flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
    __shared__ __align__(16) bf16 Qs[TILE_ELEMS], Ks[2][TILE_ELEMS], Vs[2][TILE_ELEMS];
    int qt = gridDim.x - 1 - blockIdx.x;       // the longest rows (most key tiles) start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    int q0 = qt * TILE;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};   // this thread's two query rows

    load_tile(Qs, qp, 3 * C, q0, T);
    load_tile(Ks[0], qp + C, 3 * C, 0, T);
    load_tile(Vs[0], qp + 2 * C, 3 * C, 0, T);
    cp_async_commit();

    u32 qf[4][4];
    float o[8][4] = {}, s[8][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int kt = 0; kt <= qt; kt++) {
        int k0 = kt * TILE, buf = kt % 2;
        if (kt < qt) {                         // the next tile's copy overlaps this tile's math
            load_tile(Ks[buf ^ 1], qp + C, 3 * C, k0 + TILE, T);
            load_tile(Vs[buf ^ 1], qp + 2 * C, 3 * C, k0 + TILE, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == 0) load_a(qf, Qs, warp * 16);
        mul_abt(s, qf, Ks[buf]);
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
        u32 pf[4][4];
        to_a(pf, s);
        mul_ab(o, pf, Vs[buf]);
        __syncthreads();                       // everyone is done with buf before it is refilled
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
// dV = P^T dO.

// delta[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]: one warp per row, 2 per lane
extern "C" __global__ void flash_attention_delta(float* delta, const bf16* dout, const bf16* out,
                                                 int B, int T, int NH) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= B * NH * T) return;
    int t = row % T, bh = row / T, b = bh / NH, h = bh % NH;
    size_t i = ((size_t)b * T + t) * NH * HS + h * HS + 2 * lane;
    __nv_bfloat162 d = *reinterpret_cast<const __nv_bfloat162*>(dout + i);
    __nv_bfloat162 o = *reinterpret_cast<const __nv_bfloat162*>(out + i);
    float sum = warp_sum(__low2float(d) * __low2float(o) + __high2float(d) * __high2float(o));
    if (lane == 0) delta[row] = sum;
}

// Two kernels, each owning what it writes, so nothing needs atomics: one per key tile (dK, dV:
// loops over the query tiles on and below the diagonal), one per query tile (dQ: loops over the
// key tiles up to the diagonal), each recomputing P from the saved lse. (One kernel for all
// three, adding each key tile's part of dQ in a fixed order, does 5 tile products per tile pair
// instead of 7 but was slower: dev/cuda/attention.py versions 5 and 6.) The streamed tiles are
// double-buffered in dynamic shared memory: 2 resident tiles, 2 x 2 streamed ones, and the
// streamed rows' lse and delta twice = 55 KB.

// dK, dV for one key tile: each warp owns 16 keys and computes the transposed products
// S^T = K Q^T, dP^T = V dO^T for the 64 queries of each tile, so that P^T and dS^T come out
// in C layout, ready to be the A operands of dV += P^T dO and dK += dS^T Q.
extern "C" __global__ void __launch_bounds__(THREADS, DKDV_BLOCKS_PER_SM)
flash_attention_backward_dkdv(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                              const float* delta, int T, int NH, float scale, float scale_log2) {
    extern __shared__ __align__(16) bf16 smem[];
    bf16 *Ks = smem, *Vs = Ks + TILE_ELEMS;
    auto Qs = [&](int buf) { return Vs + (1 + buf) * TILE_ELEMS; };       // buffers 0 and 1
    auto dOs = [&](int buf) { return Vs + (3 + buf) * TILE_ELEMS; };
    float (*lse_s)[TILE] = reinterpret_cast<float (*)[TILE]>(Vs + 5 * TILE_ELEMS);
    float (*delta_s)[TILE] = lse_s + 2;

    int tiles = gridDim.x, kt = blockIdx.x;    // key tile 0 sees the most query tiles: first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    const bf16* dop = dout + (size_t)b * T * C + h * HS;
    int k0 = kt * TILE;
    int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

    auto load_queries = [&](int qt, int buf) {  // query tile qt's Q, dO, lse, delta into buf
        int q0 = qt * TILE;
        load_tile(Qs(buf), qp, 3 * C, q0, T);
        load_tile(dOs(buf), dop, C, q0, T);
        for (int i = threadIdx.x; i < TILE; i += THREADS) {
            bool valid = q0 + i < T;           // padded queries: zero dO rows, so dS = 0 there
            lse_s[buf][i] = valid ? lse[(size_t)bh * T + q0 + i] : 0.0f;
            delta_s[buf][i] = valid ? delta[(size_t)bh * T + q0 + i] : 0.0f;
        }
    };
    load_tile(Ks, qp + C, 3 * C, k0, T);
    load_tile(Vs, qp + 2 * C, 3 * C, k0, T);
    load_queries(kt, 0);
    cp_async_commit();

    float dk[8][4] = {}, dv[8][4] = {};
    for (int qt = kt, buf = 0; qt < tiles; qt++, buf ^= 1) {
        int q0 = qt * TILE;
        if (qt + 1 < tiles) {                  // the next tile's copy overlaps this tile's math
            load_queries(qt + 1, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float p[8][4], dp[8][4];
        u32 a[4][4];
        load_a(a, Ks, warp * 16);
        mul_abt(p, a, Qs(buf));                // S^T: rows = keys, columns = queries
        load_a(a, Vs, warp * 16);
        mul_abt(dp, a, dOs(buf));              // dP^T
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int col = nt * 8 + 2 * q + e % 2, query = q0 + col;
                float pe = exp2f(p[nt][e] * scale_log2 - lse_s[buf][col]);
                if (qt == kt && query < keys[e / 2]) pe = 0.0f;     // the key is in its future
                p[nt][e] = pe;
                dp[nt][e] = pe * (dp[nt][e] - delta_s[buf][col]);   // dS^T
            }
        to_a(a, p);
        mul_ab(dv, a, dOs(buf));
        to_a(a, dp);
        mul_ab(dk, a, Qs(buf));
        __syncthreads();                       // everyone is done with buf before it is refilled
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
    extern __shared__ __align__(16) bf16 smem[];
    bf16 *Qs = smem, *dOs = Qs + TILE_ELEMS;
    auto Ks = [&](int buf) { return dOs + (1 + buf) * TILE_ELEMS; };
    auto Vs = [&](int buf) { return dOs + (3 + buf) * TILE_ELEMS; };
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
        row_lse[r] = valid ? lse[(size_t)bh * T + rows[r]] : 0.0f;
        row_delta[r] = valid ? delta[(size_t)bh * T + rows[r]] : 0.0f;
    }

    load_tile(Qs, qp, 3 * C, q0, T);
    load_tile(dOs, dop, C, q0, T);
    load_tile(Ks(0), qp + C, 3 * C, 0, T);
    load_tile(Vs(0), qp + 2 * C, 3 * C, 0, T);
    cp_async_commit();

    float dq[8][4] = {};
    for (int kt = 0, buf = 0; kt <= qt; kt++, buf ^= 1) {
        int k0 = kt * TILE;
        if (kt < qt) {
            load_tile(Ks(buf ^ 1), qp + C, 3 * C, k0 + TILE, T);
            load_tile(Vs(buf ^ 1), qp + 2 * C, 3 * C, k0 + TILE, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float p[8][4], dp[8][4];
        u32 a[4][4];
        load_a(a, Qs, warp * 16);
        mul_abt(p, a, Ks(buf));                // S
        load_a(a, dOs, warp * 16);
        mul_abt(dp, a, Vs(buf));               // dP = dO V^T
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int key = k0 + nt * 8 + 2 * q + e % 2;
                float pe = exp2f(p[nt][e] * scale_log2 - row_lse[e / 2]);
                if (kt == qt && key > rows[e / 2]) pe = 0.0f;
                dp[nt][e] = pe * (dp[nt][e] - row_delta[e / 2]);     // dS
            }
        to_a(a, dp);
        mul_ab(dq, a, Ks(buf));
        __syncthreads();
    }
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= T) continue;
        bf16* dst = dqkv + ((size_t)b * T + rows[r]) * 3 * C + h * HS + 2 * q;
        for (int nt = 0; nt < 8; nt++)
            *reinterpret_cast<u32*>(dst + nt * 8) = pack(scale * dq[nt][2 * r], scale * dq[nt][2 * r + 1]);
    }
}
