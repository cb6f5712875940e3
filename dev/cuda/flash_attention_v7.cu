// Version 7's dQ kernel (dev/cuda/attention.py versions 7 and 8), replaced in
// kernels/flash_attention.cu by one that reads the dS tiles the dK/dV kernel stores: this one
// recomputes S = Q K^T and dP = dO V^T for every tile pair (3 tile products instead of 1, and the
// exponentials again). Runs after llmpy's dK/dV kernel launched without a dS buffer.
#include "flash_attention.cuh"

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
