// Versions 5 and 6 of dev/cuda/attention.py, kept for comparison: the backward in one kernel per
// key tile, dQ added across key tiles in a fixed order (dq_accum (B*NH, tiles, 64, 64) fp32, the
// running dQ of each query tile). Slower than llmpy's two kernels (see there). The forward and
// delta kernels are llmpy's (kernels/flash_attention.cu); layouts as there.
#include "flash_attention.cuh"

// backward's occupancy target: at 2 blocks per SM it takes 246 registers a thread on the H200, at 3
// it is capped at 168 (dev/cuda/attention.py times both)
#ifndef BACKWARD_BLOCKS_PER_SM
#define BACKWARD_BLOCKS_PER_SM 2
#endif

__device__ __forceinline__ u32 load_acquire(const u32* p) {
    u32 v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// One block per key tile kt; grid (tiles, B*NH), the key tiles in reverse launch order (see
// below). Each warp owns 16 keys and loops over the query tiles qt = kt.. (those on or below the
// diagonal), computing the transposed products S^T = K Q^T and dP^T = V dO^T, so that P^T and
// dS^T come out in C layout, ready to be the A operands of dV += P^T dO and dK += dS^T Q; dK and
// dV stay in registers and are written once at the end.
// dQ of query tile qt sums the contributions dS K of key tiles 0..qt, which live in different
// blocks. Instead of float atomics (whose order, and so whose rounding, varies run to run) the
// blocks add into dq_accum in a fixed order, kt = qt first, then qt-1, ..., 0: counter[bh, qt]
// counts the key tiles that have added, and block kt waits for it to reach qt - kt. That is the
// order in which the blocks get there anyway (block kt+1 starts one tile nearer the diagonal),
// so the waits are short; launched before kt, block kt+1 is always running or done, so the wait
// cannot deadlock. Block 0 adds last and writes the scaled bf16 dQ.
// Shared memory (dynamic, 64 KB): K, V, double-buffered Q and dO, dS^T, lse and delta.
extern "C" __global__ void __launch_bounds__(THREADS, BACKWARD_BLOCKS_PER_SM)
flash_attention_backward(bf16* dqkv, float* dq_accum, u32* counter, const bf16* dout,
                         const bf16* qkv, const float* lse, const float* delta, int T, int NH,
                         float scale, float scale_log2) {
    extern __shared__ __align__(16) bf16 smem[];
    bf16 *Ks = smem, *Vs = Ks + TILE_ELEMS, *dSs = Vs + TILE_ELEMS;
    auto Qs = [&](int buf) { return dSs + (1 + buf) * TILE_ELEMS; };     // buffers 0 and 1
    auto dOs = [&](int buf) { return dSs + (3 + buf) * TILE_ELEMS; };
    float (*lse_s)[TILE] = reinterpret_cast<float (*)[TILE]>(dSs + 5 * TILE_ELEMS);
    float (*delta_s)[TILE] = lse_s + 2;

    int tiles = gridDim.x, kt = tiles - 1 - blockIdx.x;
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    const bf16* dop = dout + (size_t)b * T * C + h * HS;
    int k0 = kt * TILE;
    int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

    // copies of query tile qt (Q, dO, lse, delta) into buffer buf
    auto load_queries = [&](int qt, int buf) {
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
        if (qt + 1 < tiles) {
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
        // dS^T (bf16, the A fragments just used) to shared memory: dQ needs all 64 keys' rows
        for (int ks = 0; ks < 4; ks++) {
            bf16* row = dSs + (warp * 16 + g) * STRIDE + ks * 16 + 2 * q;
            *reinterpret_cast<u32*>(row) = a[ks][0];
            *reinterpret_cast<u32*>(row + 8 * STRIDE) = a[ks][1];
            *reinterpret_cast<u32*>(row + 8) = a[ks][2];
            *reinterpret_cast<u32*>(row + 8 * STRIDE + 8) = a[ks][3];
        }
        __syncthreads();
        // this block's part of dQ for the warp's 16 queries: dS (16 x 64 keys) @ K (64 x 64)
        float dq[8][4] = {};
        load_a_trans(a, dSs, warp * 16);
        mul_ab(dq, a, Ks);

        u32* count = counter + (size_t)bh * tiles + qt;
        if (qt != kt) {
            if (threadIdx.x == 0)
                while (load_acquire(count) < (u32)(qt - kt)) __nanosleep(64);
            __syncthreads();
        }
        float* acc = dq_accum + ((size_t)bh * tiles + qt) * TILE * HS;
        for (int r = 0; r < 2; r++) {
            int row = warp * 16 + g + 8 * r;
            for (int nt = 0; nt < 8; nt++) {
                float2* slot = reinterpret_cast<float2*>(acc + row * HS + nt * 8 + 2 * q);
                float2 v = make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]);
                if (qt != kt) {                // L2, not L1: other SMs wrote it
                    float2 prev = __ldcg(slot);
                    v.x += prev.x;
                    v.y += prev.y;
                }
                if (kt > 0) {
                    __stcg(slot, v);
                } else if (q0 + row < T) {
                    bf16* dst = dqkv + ((size_t)b * T + q0 + row) * 3 * C + h * HS + nt * 8 + 2 * q;
                    *reinterpret_cast<u32*>(dst) = pack(scale * v.x, scale * v.y);
                }
            }
        }
        if (kt > 0) {
            __threadfence();                   // the sums are visible before the count says so
            __syncthreads();
            if (threadIdx.x == 0) atomicAdd(count, 1u);
        }
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
