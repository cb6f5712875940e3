// Causal flash-attention forward on Hopper's warpgroup tensor-core instructions (wgmma.mma_async,
// sm_90a only), head size 64: kernels/flash_attention.cu's forward (same arguments, outputs, lse
// convention and online softmax in log2 units) with its mma.sync products replaced by wgmma.
//
// Block: 2 warpgroups (256 threads) and 128 query rows, 64 per warpgroup (wgmma's M). Grid
// (ceil(T/128), B*NH), heaviest query tiles first; dynamic shared memory 50176 bytes
// (Q 16 KB, K and V double-buffered 4 x 8 KB, 1 KB to align the tiles to 1024 bytes).
// The keys stream in 64-row tiles, shared by both warpgroups: tile 2*qt + w is warpgroup w's
// diagonal, so warpgroup 0 sits out the block's last key tile.
//   S = Q K^T:  wgmma m64n64k16, A = Q and B = K both from shared memory (K row-major is a
//               "K-major" B), 4 k-steps over the head dimension
//   O += P V:   wgmma m64n64k16, A = P from registers (an m64nN accumulator is, per warp, the
//               mma.sync C layout repeated over N/8, so to_a() turns S into A fragments), B = V
//               from shared memory: V row-major is "N-major", read with the transpose bit
// Why faster than mma.sync: one wgmma reads its B operand from shared memory once for the whole
// warpgroup (no ldmatrix per warp: 4x less shared-memory traffic and far fewer issued
// instructions), the tensor cores run at wgmma's higher rate, the products are issued
// asynchronously so one warpgroup's softmax runs while the other's (and the other block's)
// products occupy the tensor cores, and every K/V tile copied feeds 128 query rows, not 64.
// H200, NH = 12, T = 1024: 0.478 ms at B = 64 against the mma.sync forward's 0.566 (0.085 vs
// 0.094 at B = 8), the same errors against the NumPy reference; 128 registers under NVRTC (120
// under nvcc), none spilled, 2 blocks per SM. Products are waited for at once (no overlap of a
// warpgroup's own softmax with its next QK^T: FlashAttention-3's next step).
//
// The shared-memory tile layout and the descriptors are in kernels/wgmma.cuh.
#include "wgmma.cuh"

#define WG_THREADS 256             // two warpgroups
#define QROWS 128                  // query rows per block, 64 per warpgroup

extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
flash_attention_forward_wgmma(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16* Qs = align_1024(smem_raw);
    auto Ks = [&](int buf) { return Qs + (QROWS + buf * TILE) * HS; };
    auto Vs = [&](int buf) { return Qs + (QROWS + (2 + buf) * TILE) * HS; };
    int qt = gridDim.x - 1 - blockIdx.x;       // the longest rows (most key tiles) start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int wg = threadIdx.x / 128, warp = threadIdx.x % 128 / 32, g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    int q0 = qt * QROWS;
    int diag = 2 * qt + wg;                    // this warpgroup's diagonal key tile
    // key tiles past T hold no key any valid row sees: warpgroup 1's diagonal is skipped only
    // where all its rows are >= T
    int tiles = (T + TILE - 1) / TILE < 2 * qt + 2 ? (T + TILE - 1) / TILE : 2 * qt + 2;
    int row0 = q0 + wg * 64 + warp * 16 + g;
    int rows[2] = {row0, row0 + 8};            // this thread's two query rows

    load_tile_sw(Qs, qp, 3 * C, q0, QROWS, T, WG_THREADS);
    load_tile_sw(Ks(0), qp + C, 3 * C, 0, TILE, T, WG_THREADS);
    load_tile_sw(Vs(0), qp + 2 * C, 3 * C, 0, TILE, T, WG_THREADS);
    cp_async_commit();

    const u64 dq = make_desc(Qs + wg * 64 * HS);
    float o[8][4] = {}, s[8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int kt = 0; kt < tiles; kt++) {
        int k0 = kt * TILE, buf = kt % 2;
        if (kt + 1 < tiles) {                  // the next tile's copy overlaps this tile's math
            load_tile_sw(Ks(buf ^ 1), qp + C, 3 * C, k0 + TILE, TILE, T, WG_THREADS);
            load_tile_sw(Vs(buf ^ 1), qp + 2 * C, 3 * C, k0 + TILE, TILE, T, WG_THREADS);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_proxy_async();
        __syncthreads();
        if (kt <= diag) {                      // uniform over the warpgroup, as wgmma requires
            u64 dk = make_desc(Ks(buf)), dv = make_desc(Vs(buf));
            wgmma_fence();
            for (int ks = 0; ks < 4; ks++)     // 16 columns of the head = 32 bytes per k-step
                wgmma_ss(s, dq + 2 * ks, dk + 2 * ks, ks);
            wgmma_commit();
            wgmma_wait<0>();
            fence_acc(s);
            float mnew[2] = {m[0], m[1]};
            for (int nt = 0; nt < 8; nt++)
                for (int e = 0; e < 4; e++) {
                    int key = k0 + nt * 8 + 2 * q + e % 2;
                    float x = s[nt][e] * scale_log2;
                    if (kt == diag && key > rows[e / 2]) x = -INFINITY;     // the future
                    s[nt][e] = x;
                    mnew[e / 2] = fmaxf(mnew[e / 2], x);
                }
            for (int r = 0; r < 2; r++) {      // a row's 64 scores sit in 4 lanes of a quad
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
                    l[e / 2] += s[nt][e];      // this lane's part of the row sum
                }
            u32 pf[4][4];
            to_a(pf, s);
            wgmma_fence();                     // o and pf were written by ordinary instructions
            for (int ks = 0; ks < 4; ks++)     // 16 keys = 16 swizzled rows = 2048 bytes per k-step
                wgmma_rs(o, pf[ks], dv + 128 * ks);
            wgmma_commit();
            wgmma_wait<0>();                   // done reading buf before the barrier below
            fence_acc(o);
        }
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
