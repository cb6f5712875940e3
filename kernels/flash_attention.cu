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
// the tiles the mask hides (flash_attention.cuh; causal: those above the diagonal), the next
// tile's copy (cp.async) in flight while the current one is used. Every sum runs in a fixed order, so the results are the same bits run to run.
//
#include "flash_attention.cuh"

// dK/dV kernel's occupancy target: 3 blocks per SM cap it at 168 registers a thread (a few
// spills); at 2 it takes ~244 and runs slower (dev/cuda/attention.py version 8)
#define DKDV_BLOCKS_PER_SM 3
// the forward uncapped: ~134 registers, 3 blocks per SM; capped at 4 blocks (128 registers) it
// is no faster (version 9)
#define FORWARD_BOUNDS __launch_bounds__(THREADS)

// ---------------------------------------------------------------------------------------------
// forward: grid (T/64 query tiles, B*NH); each warp owns 16 query rows and keeps a running max
// m, a running denominator l and the output accumulator o in registers (online softmax).
// K and V tiles are double-buffered: tile kt+1 is copied while tile kt is used.

extern "C" __global__ void FORWARD_BOUNDS
flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
    __shared__ __align__(16) bf16 Qs[TILE_ELEMS], Ks[2][TILE_ELEMS], Vs[2][TILE_ELEMS];
    int qt = gridDim.x - 1 - blockIdx.x;       // the longest rows (most key tiles) start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    int q0 = qt * TILE;
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};   // this thread's two query rows
    int kt_begin = key_tiles_begin(qt), kt_end = key_tiles_end(qt);   // the key tiles it sees

    load_tile(Qs, qp, 3 * C, q0, T);
    load_tile(Ks[0], qp + C, 3 * C, kt_begin * TILE, T);
    load_tile(Vs[0], qp + 2 * C, 3 * C, kt_begin * TILE, T);
    cp_async_commit();

    u32 qf[4][4];
    float o[8][4] = {}, s[8][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int kt = kt_begin; kt < kt_end; kt++) {
        int k0 = kt * TILE, buf = (kt - kt_begin) % 2;
        double_buffer_step(kt + 1 < kt_end, [&] {     // the next tile's copy overlaps this tile's math
            load_tile(Ks[buf ^ 1], qp + C, 3 * C, k0 + TILE, T);
            load_tile(Vs[buf ^ 1], qp + 2 * C, 3 * C, k0 + TILE, T);
        });
        if (kt == kt_begin) load_a(qf, Qs, warp * 16);
        mul_abt(s, qf, Ks[buf]);
        softmax_tile(s, o, m, l, k0, rows, partly_masked(qt, kt), scale_log2);
        u32 pf[4][4];
        to_a(pf, s);
        mul_ab(o, pf, Vs[buf]);
        __syncthreads();                       // everyone is done with buf before it is refilled
    }
    store_output(out, lse, o, m, l, rows, b, h, bh, T, C);
}

// ---------------------------------------------------------------------------------------------
// backward. With P = softmax(scale * Q K^T) and dP = dO V^T, the score gradient is
// dS = P * (dP - delta), delta = rowsum(dO * O); then dQ = scale dS K, dK = scale dS^T Q,
// dV = P^T dO.

// delta[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]: 8 lanes per row, 16 bytes of each
// per lane; rows are taken in memory order (b, t, h), so a warp reads 512 contiguous bytes
extern "C" __global__ void flash_attention_delta(float* delta, const bf16* dout, const bf16* out,
                                                 int B, int T, int NH) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;   // element
    bool valid = i < (size_t)B * T * NH * HS;  // whole rows of 8 lanes, all in or all out
    float sum = 0.0f;
    if (valid) {
        x128 d = load128(dout + i), o = load128(out + i);
        for (int k = 0; k < x128::size; k++) sum += to_float(d[k]) * to_float(o[k]);
    }
    for (int offset = 1; offset < HS / x128::size; offset *= 2)   // every lane takes part
        sum += __shfl_xor_sync(0xffffffff, sum, offset);
    size_t row = i / HS;                       // (b * T + t) * NH + h
    int h = row % NH, t = row / NH % T, b = row / NH / T;
    if (valid && threadIdx.x % (HS / x128::size) == 0) delta[((size_t)b * NH + h) * T + t] = sum;
}

// Two kernels, each owning what it writes, so nothing needs atomics: one per key tile (dK, dV:
// loops over the query tiles that see its keys, recomputing P from the saved lse), which
// also stores every tile pair's dS (bf16, 8 KB a pair: B*NH*136 pairs = 855 MB at d12, B=64,
// T=1024), and one per query tile (dQ: sums dS K over the key tiles it sees). That is
// 5 tile products per tile pair, the dQ kernel's one memory-bound. (Recomputing S and dP in the
// dQ kernel instead costs 7 products: dev/cuda/attention.py version 7; adding each key tile's
// part of dQ in a fixed order from one kernel stalls: versions 5 and 6.) The streamed tiles are
// double-buffered in dynamic shared memory: dK/dV: 2 resident tiles, 2 x 2 streamed ones, the
// streamed rows' lse and delta twice, and dS^T's staging tile = 64 KB; dQ: 2 x 2 streamed
// tiles = 36 KB. The dS tiles' layout: ds_tile in flash_attention.cuh. (On Hopper the dK/dV
// kernel of kernels/flash_attention_wgmma.cu takes this one's place.)

// dK, dV for one key tile: each warp owns 16 keys and computes the transposed products
// S^T = K Q^T, dP^T = V dO^T for the 64 queries of each tile, so that P^T and dS^T come out
// in C layout, ready to be the A operands of dV += P^T dO and dK += dS^T Q.
extern "C" __global__ void __launch_bounds__(THREADS, DKDV_BLOCKS_PER_SM)
flash_attention_backward_dkdv(bf16* dqkv, float* bias_partial, bf16* ds, const bf16* dout,
                              const bf16* qkv, const float* lse, const float* delta, int T,
                              int NH, float scale, float scale_log2) {
    extern __shared__ __align__(16) bf16 smem[];
    bf16 *Ks = smem, *Vs = Ks + TILE_ELEMS;
    auto Qs = [&](int buf) { return Vs + (1 + buf) * TILE_ELEMS; };       // buffers 0 and 1
    auto dOs = [&](int buf) { return Vs + (3 + buf) * TILE_ELEMS; };
    float (*lse_s)[TILE] = reinterpret_cast<float (*)[TILE]>(Vs + 5 * TILE_ELEMS);
    float (*delta_s)[TILE] = lse_s + 2;
    bf16* dSs = reinterpret_cast<bf16*>(delta_s + 2);                     // dS^T on its way out

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
    int qt_begin = query_tiles_begin(kt), qt_end = query_tiles_end(kt, tiles);   // the query tiles that see it
    load_queries(qt_begin, 0);
    cp_async_commit();

    float dk[8][4] = {}, dv[8][4] = {};
    for (int qt = qt_begin, buf = 0; qt < qt_end; qt++, buf ^= 1) {
        int q0 = qt * TILE;
        double_buffer_step(qt + 1 < qt_end, [&] { load_queries(qt + 1, buf ^ 1); });
        float p[8][4], dp[8][4];
        u32 a[4][4];
        load_a(a, Ks, warp * 16);
        mul_abt(p, a, Qs(buf));                // S^T: rows = keys, columns = queries
        load_a(a, Vs, warp * 16);
        mul_abt(dp, a, dOs(buf));              // dP^T
        for (int nt = 0; nt < 8; nt++)
            for (int e = 0; e < 4; e++) {
                int col = nt * 8 + 2 * q + e % 2, query = q0 + col;
                float pe = exp2_ftz(fmaf(p[nt][e], scale_log2, -lse_s[buf][col]));
                if (partly_masked(qt, kt) && !sees(query, keys[e / 2])) pe = 0.0f;   // a hidden key
                p[nt][e] = pe;
                dp[nt][e] = pe * (dp[nt][e] - delta_s[buf][col]);   // dS^T
            }
        // this tile pair's dS^T in bf16 for the dQ kernel, staged in shared memory so that
        // each warp stores its 16 rows as whole 128-byte lines
        bf16* stage = dSs + warp * 16 * STRIDE;
        for (int nt = 0; nt < 8; nt++) {
            *reinterpret_cast<u32*>(stage + g * STRIDE + nt * 8 + 2 * q) = pack(dp[nt][0], dp[nt][1]);
            *reinterpret_cast<u32*>(stage + (g + 8) * STRIDE + nt * 8 + 2 * q) = pack(dp[nt][2], dp[nt][3]);
        }
        __syncwarp();
        bf16* dst = ds + ds_tile(bh, tiles, qt, kt) + warp * 16 * TILE;
        for (int i = threadIdx.x % 32; i < 16 * 8; i += 32) {
            int r = i / 8, c = i % 8 * 8;
            *reinterpret_cast<int4*>(dst + r * TILE + c) = *reinterpret_cast<const int4*>(stage + r * STRIDE + c);
        }
        to_a(a, p);
        mul_ab(dv, a, dOs(buf));
        to_a(a, dp);
        mul_ab(dk, a, Qs(buf));
        __syncthreads();                       // everyone is done with buf before it is refilled
    }
    if (bias_partial) {                        // the tiles are free after the loop's last barrier
        float* red = reinterpret_cast<float*>(smem);
        float* dst = bias_partial + ((size_t)b * tiles + kt) * 3 * C + h * HS;
        column_sums(dst + C, dk, scale, keys[0] < T, keys[1] < T, red);
        column_sums(dst + 2 * C, dv, 1.0f, keys[0] < T, keys[1] < T, red);
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

// dQ for one query tile from the dS tiles that the dK/dV kernel stored: dQ = scale * sum over
// the key tiles it sees of dS (64 queries x 64 keys) K (64 keys x 64). One product
// per tile pair, no exponentials: the dS^T tile (stored key-major) and the K tile stream
// through shared memory, double-buffered; ldmatrix.trans reads dS^T as dS's A fragments.
extern "C" __global__ void __launch_bounds__(THREADS)
flash_attention_backward_dq(bf16* dqkv, float* bias_partial, const bf16* ds, const bf16* qkv,
                            int T, int NH, float scale) {
    extern __shared__ __align__(16) bf16 smem[];
    auto dSs = [&](int buf) { return smem + buf * TILE_ELEMS; };
    auto Ks = [&](int buf) { return smem + (2 + buf) * TILE_ELEMS; };
    int tiles = gridDim.x, qt = tiles - 1 - blockIdx.x;
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* kp = qkv + (size_t)b * T * 3 * C + C + h * HS;
    const bf16* dsp = ds + ds_tile(bh, tiles, qt, 0);   // this query tile's dS tiles, in kt order
    int rows[2] = {qt * TILE + warp * 16 + g, qt * TILE + warp * 16 + g + 8};
    int kt_begin = key_tiles_begin(qt), kt_end = key_tiles_end(qt);   // the key tiles it sees

    load_tile(dSs(0), dsp + (size_t)kt_begin * TILE * TILE, TILE, 0, TILE);
    load_tile(Ks(0), kp, 3 * C, kt_begin * TILE, T);
    cp_async_commit();
    float dq[8][4] = {};
    for (int kt = kt_begin, buf = 0; kt < kt_end; kt++, buf ^= 1) {
        double_buffer_step(kt + 1 < kt_end, [&] {
            load_tile(dSs(buf ^ 1), dsp + (size_t)(kt + 1) * TILE * TILE, TILE, 0, TILE);
            load_tile(Ks(buf ^ 1), kp, 3 * C, (kt + 1) * TILE, T);
        });
        u32 a[4][4];
        load_a_trans(a, dSs(buf), warp * 16);
        mul_ab(dq, a, Ks(buf));
        __syncthreads();
    }
    if (bias_partial)                          // the tiles are free after the loop's last barrier
        column_sums(bias_partial + ((size_t)b * tiles + qt) * 3 * C + h * HS, dq, scale,
                    rows[0] < T, rows[1] < T, reinterpret_cast<float*>(smem));
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= T) continue;
        bf16* dst = dqkv + ((size_t)b * T + rows[r]) * 3 * C + h * HS + 2 * q;
        for (int nt = 0; nt < 8; nt++)
            *reinterpret_cast<u32*>(dst + nt * 8) = pack(scale * dq[nt][2 * r], scale * dq[nt][2 * r + 1]);
    }
}
