// Causal flash attention on Hopper's warpgroup tensor-core instructions (wgmma.mma_async, sm_90a
// only), head size 64: the forward and the backward's dK/dV and dQ kernels of
// kernels/flash_attention.cu (same arguments, outputs, lse convention, dS tiles) with their
// mma.sync products replaced by wgmma. The backward's delta kernel stays that of
// kernels/flash_attention.cu.
//
// The forward:
// Block: 2 warpgroups (256 threads) and 128 query rows, 64 per warpgroup (wgmma's M). Grid
// (ceil(T/128), B*NH), heaviest query tiles first; dynamic shared memory 66560 bytes
// (Q 16 KB, FWD_STAGES = 3 stages of a K and a V tile, 6 x 8 KB, 1 KB to align the tiles to
// 1024 bytes). The keys stream in 64-row tiles, shared by both warpgroups, each warpgroup
// sitting out the tiles its query tile 2*qt + w does not see (the mask's; causal: warpgroup 0
// sits out the block's last key tile, warpgroup 1's diagonal). The stages are
// filled by cp.async, one commit group a tile (empty past the last), one barrier a tile: wait
// for tile kt, fence.proxy.async, barrier, start filling the stage tile kt-1 used, then the
// products (the dQ kernel's pipeline below). With 3 stages a tile's copy starts a whole tile
// before it is waited for; FWD_STAGES = 2 is a double buffer (version 12's).
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
// Products are waited for at once: overlapping a warpgroup's softmax with its next products
// (FlashAttention-3's schedule) was measured slower here (docs/performance.md).
//
// The shared-memory tile layout and the descriptors are in kernels/wgmma.cuh.
#include "wgmma.cuh"

// The knobs come from llmpy/launch_config.py (-D), which sizes each kernel's shared memory from
// the same values: FWD_STAGES (the forward's K/V stages; 2 is a double buffer), BWD_STAGES (the
// dK/dV kernel's Q/dO stages), DQ_WGS (the dQ kernel's warpgroups, one 64-row query tile each)
// and DQ_STAGES (its stages).
#if !defined(FWD_STAGES) || !defined(BWD_STAGES) || !defined(DQ_WGS) || !defined(DQ_STAGES)
#error "FWD_STAGES, BWD_STAGES, DQ_WGS, DQ_STAGES: set by llmpy/launch_config.py's KNOBS"
#endif

#define WG_THREADS 256             // two warpgroups
#define QROWS 128                  // query rows per block, 64 per warpgroup
static_assert(FWD_STAGES >= 2, "FWD_STAGES: at least double-buffered");

extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
flash_attention_forward_wgmma(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16* Qs = align_1024(smem_raw);
    auto Ks = [&](int st) { return Qs + (QROWS + 2 * st * TILE) * HS; };
    auto Vs = [&](int st) { return Qs + (QROWS + (2 * st + 1) * TILE) * HS; };
    int qt = gridDim.x - 1 - blockIdx.x;       // the longest rows (most key tiles) start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int wg = threadIdx.x / 128, warp = threadIdx.x % 128 / 32, g = threadIdx.x % 32 / 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    int q0 = qt * QROWS;
    int wqt = 2 * qt + wg;                     // this warpgroup's 64-row query tile
    int kt_begin = key_tiles_begin(wqt), kt_end = key_tiles_end(wqt);   // the key tiles it sees
    // the block's key tiles: from warpgroup 0's first to warpgroup 1's last, none past T (they
    // hold no key any valid row sees: warpgroup 1's last is skipped where all its rows are >= T)
    int block_begin = key_tiles_begin(2 * qt);
    int block_end = min((T + TILE - 1) / TILE, key_tiles_end(2 * qt + 1));
    int row0 = q0 + wg * 64 + warp * 16 + g;
    int rows[2] = {row0, row0 + 8};            // this thread's two query rows

    auto load_kv = [&](int kt) {               // key tile kt into its stage, one commit group
        if (kt < block_end) {                  // (empty past the last tile: every thread's
            int st = (kt - block_begin) % FWD_STAGES;   // group count stays the same)
            load_tile_sw(Ks(st), qp + C, 3 * C, kt * TILE, TILE, T, WG_THREADS);
            load_tile_sw(Vs(st), qp + 2 * C, 3 * C, kt * TILE, TILE, T, WG_THREADS);
        }
        cp_async_commit();
    };
    load_tile_sw(Qs, qp, 3 * C, q0, QROWS, T, WG_THREADS);   // in tile 0's commit group
    for (int kt = block_begin; kt < block_begin + FWD_STAGES - 1; kt++) load_kv(kt);

    const u64 dq = make_desc(Qs + wg * 64 * HS);
    float o[8][4] = {}, s[8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int kt = block_begin; kt < block_end; kt++) {
        stage_ready<FWD_STAGES>();             // tile kt is in; tile kt-1's stage is free
        load_kv(kt + FWD_STAGES - 1);          // into the stage tile kt-1 used
        if (kt >= kt_begin && kt < kt_end) {   // uniform over the warpgroup, as wgmma requires
            int st = (kt - block_begin) % FWD_STAGES;
            u64 dk = make_desc(Ks(st)), dv = make_desc(Vs(st));
            wgmma_fence();
            for (int ks = 0; ks < 4; ks++)     // 16 columns of the head = 32 bytes per k-step
                wgmma_ss(s, dq + 2 * ks, dk + 2 * ks, ks);
            wgmma_commit();
            wgmma_wait<0>();
            fence_acc(s);
            softmax_tile(s, o, m, l, kt * TILE, rows, partly_masked(wqt, kt), scale_log2);
            u32 pf[4][4];
            to_a(pf, s);
            wgmma_fence();                     // o and pf were written by ordinary instructions
            for (int ks = 0; ks < 4; ks++)     // 16 keys = 16 swizzled rows = 2048 bytes per k-step
                wgmma_rs(o, pf[ks], dv + 128 * ks);
            wgmma_commit();
            wgmma_wait<0>();                   // done reading the stage before the next barrier
            fence_acc(o);
        }
    }
    cp_async_wait<0>();                        // only empty groups can be pending
    store_output(out, lse, o, m, l, rows, b, h, bh, T, C);
}

// ---------------------------------------------------------------------------------------------
// The backward's dK/dV kernel on wgmma: kernels/flash_attention.cu's
// flash_attention_backward_dkdv (same arguments in the same order, same outputs, the same dS
// tiles for the dQ kernel, bit for bit) with its mma.sync products replaced by wgmma.
//
// Block: BWD_WGS warpgroups of 128 threads, 64 keys each (wgmma's M); default 1 warpgroup, so
// grid (ceil(T/64), B*NH) and 128 threads as the mma.sync kernel: block x holds key tile x, and
// each head's heaviest key tiles (the most query tiles) start first. Dynamic shared memory
// 3 * 64 * BWD_WGS * 128 + BWD_STAGES * (2 * 8192 + 512) + 1024 bytes = 76288 at 1 warpgroup
// and 3 stages: K and V of the block's keys, one 8 KB dS^T staging tile a warpgroup, BWD_STAGES
// stages of a Q and a dO tile with the rows' lse and delta, 1 KB to align the tiles to 1024
// bytes. The query tiles stream through, shared by the block's warpgroups, each warpgroup
// sitting out those that do not see its key tile BWD_WGS*x + w (causal: the query tiles before
// it). The stages are
// filled as the forward's (BWD_STAGES = 2: a double buffer, version 12's).
// Per query tile and warpgroup (64 keys x 64 queries):
//   S^T = K Q^T, dP^T = V dO^T:  wgmma m64n64k16, A = K (V) and B = Q (dO) both K-major from
//                shared memory (rows = keys or queries, the 64 columns = the head), as the
//                forward's Q K^T; both issued at once, two commit groups
//   P^T = exp2(S^T scale_log2 - lse[query]) (0 where the query does not see the key), converted
//                to bf16 A fragments; dV += P^T dO issued (A from registers, B = dO read
//                N-major with the transpose bit, as the forward reads V) while dP^T is waited for
//   dS^T = P^T (dP^T - delta[query]): bf16 A fragments; dK += dS^T Q issued the same way, and
//                while it runs each warp copies its 16 rows of dS^T (staged in shared memory
//                before the issue) to the dS tile as whole 128-byte lines
// dK * scale and dV leave through the staging tile too, whole 128-byte rows of dqkv.
// The dS tiles: ds_tile's layout (flash_attention.cuh), so kernels/flash_attention.cu's dQ
// kernel reads them unchanged; ds = NULL skips them. Padded queries
// (past T): zero Q and dO rows, lse = delta = 0, so dS = 0 there; padded keys: zero K, V rows,
// their dK, dV unwritten; all as the mma.sync kernel does. No atomics: every sum runs in a fixed
// order (the same bits run to run).
// Why faster than mma.sync: each wgmma reads its B tile from shared memory once for the
// warpgroup instead of once per warp through ldmatrix, the A operands K and V go to the tensor
// cores straight from shared memory (no fragments loaded per warp and tile), and the products
// run asynchronously: dV's product overlaps dS's arithmetic, dK's the dS stores, and one
// block's exponentials the other block's products.
// Registers: the dK, dV, S^T and dP^T accumulators (4 x 32 floats a thread) and the P^T and dS^T
// A fragments (2 x 16) take ~214 registers (none spilled): 2 blocks of 128 threads per SM. One
// warpgroup a block, 2 blocks an SM, was the fastest of the variants measured (more warpgroups
// sharing each Q/dO tile, other launch bounds), and a FlashAttention-3 overlap across query
// tiles gave the same bits more slowly (docs/performance.md). dQ, dK, dV and the dS tiles are bit-identical to
// the mma.sync kernel's (tests/gpu/test_flash_attention.py).
//
#define BWD_WGS 1                  // warpgroups a block, 64 keys each (column_sums takes one)
#define BWD_BLOCKS_PER_SM 2
static_assert(BWD_STAGES >= 2, "BWD_STAGES: at least double-buffered");
#define BWD_THREADS (BWD_WGS * 128)
#define BWD_KEYS (BWD_WGS * TILE)  // keys a block

// 4 bytes global -> shared; src_size 0 writes a zero
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n"
                 :: "r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0));
}

// A fragments handed to an asynchronous wgmma are read by it until the wait: an empty asm that
// "rewrites" them after the wait keeps the compiler from reusing their registers before
__device__ __forceinline__ void fence_frag(u32 (*a)[4]) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) asm volatile("" : "+r"(a[i][j]) :: "memory");
}

// this warp's 16 rows of a 64 x 64 accumulator (rows g and g+8 of this thread), times mul, as
// bf16 into 16 rows of 64 in shared memory, 16-byte chunk c of row r at chunk c ^ r%8: the 32
// lanes of each 4-byte store hit 32 different banks, and so do each 8 lanes of a row's reads
__device__ __forceinline__ void stage_rows(bf16* stage, float (*d)[4], float mul) {
    int g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
    for (int nt = 0; nt < 8; nt++)
        for (int r = 0; r < 2; r++) {
            int row = g + 8 * r;
            *reinterpret_cast<u32*>(stage + row * HS + ((nt ^ (row % 8)) * 8) + 2 * q) =
                pack(mul * d[nt][2 * r], mul * d[nt][2 * r + 1]);
        }
}

// the warp's 16 staged rows to global memory, row r at dst + r*stride (whole 128-byte lines),
// only the first `rows` of them
__device__ __forceinline__ void store_rows(bf16* dst, size_t stride, const bf16* stage, int rows) {
    for (int i = threadIdx.x % 32; i < 16 * 8; i += 32) {
        int r = i / 8, c = i % 8;
        if (r < rows)
            *reinterpret_cast<int4*>(dst + r * stride + c * 8) =
                *reinterpret_cast<const int4*>(stage + r * HS + (c ^ (r % 8)) * 8);
    }
}

extern "C" __global__ void __launch_bounds__(BWD_THREADS, BWD_BLOCKS_PER_SM)
flash_attention_backward_dkdv_wgmma(bf16* dqkv, float* bias_partial, bf16* ds, const bf16* dout,
                                    const bf16* qkv, const float* lse, const float* delta, int T,
                                    int NH, float scale, float scale_log2) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16* Ks = align_1024(smem_raw);
    bf16* Vs = Ks + BWD_KEYS * HS;
    auto Qs = [&](int st) { return Vs + (BWD_KEYS + 2 * st * TILE) * HS; };
    auto dOs = [&](int st) { return Vs + (BWD_KEYS + (2 * st + 1) * TILE) * HS; };
    bf16* stages = Vs + (BWD_KEYS + 2 * BWD_STAGES * TILE) * HS;        // one tile a warpgroup
    float (*lse_s)[TILE] = reinterpret_cast<float (*)[TILE]>(stages + BWD_KEYS * HS);
    float (*delta_s)[TILE] = lse_s + BWD_STAGES;

    int tiles = (T + TILE - 1) / TILE;
    int bh = blockIdx.y, kb = blockIdx.x;      // grid (key blocks, B*NH): each head's first
    int b = bh / NH, h = bh % NH, C = NH * HS;
    int wg = threadIdx.x / 128, warp = threadIdx.x % 128 / 32, g = threadIdx.x % 32 / 4;
    int q = threadIdx.x % 4;
    const bf16* qp = qkv + (size_t)b * T * 3 * C + h * HS;
    const bf16* dop = dout + (size_t)b * T * C + h * HS;
    int kt0 = kb * BWD_WGS;                    // warpgroup 0's key tile
    int kt = kt0 + wg;                         // this warpgroup's key tile (may be >= tiles)
    int qt_begin = query_tiles_begin(kt), qt_end = query_tiles_end(kt, tiles);   // those that see it
    // the block's query tiles: from warpgroup 0's first to the last warpgroup's last
    int block_begin = query_tiles_begin(kt0), block_end = query_tiles_end(kt0 + BWD_WGS - 1, tiles);
    int key0 = kt * TILE + warp * 16;          // this warp's 16 keys
    int keys[2] = {key0 + g, key0 + g + 8};    // this thread's two keys

    // query tile qt's Q, dO, lse, delta into stage (qt - block_begin) % BWD_STAGES, one commit
    // group (empty past the last tile: every thread's group count stays the same)
    auto load_queries = [&](int qt) {
        if (qt < block_end) {
            int q0 = qt * TILE, st = (qt - block_begin) % BWD_STAGES;
            load_tile_sw(Qs(st), qp, 3 * C, q0, TILE, T, BWD_THREADS);
            load_tile_sw(dOs(st), dop, C, q0, TILE, T, BWD_THREADS);
            int i = threadIdx.x;
            if (i < 2 * TILE) {
                int r = i % TILE;
                bool valid = q0 + r < T;       // padded queries: zero dO rows, so dS = 0 there
                const float* src = (i < TILE ? lse : delta) + (size_t)bh * T + (valid ? q0 + r : 0);
                cp_async4((i < TILE ? lse_s[st] : delta_s[st]) + r, src, valid);
            }
        }
        cp_async_commit();
    };
    load_tile_sw(Ks, qp + C, 3 * C, kt0 * TILE, BWD_KEYS, T, BWD_THREADS);
    load_tile_sw(Vs, qp + 2 * C, 3 * C, kt0 * TILE, BWD_KEYS, T, BWD_THREADS);
    for (int i = 0; i < BWD_STAGES - 1; i++) load_queries(block_begin + i);   // K, V: the first group

    const u64 dk_desc = make_desc(Ks + wg * TILE * HS), dv_desc = make_desc(Vs + wg * TILE * HS);
    bf16* stage = stages + (wg * TILE + warp * 16) * HS;                // this warp's 16 rows
    float dk[8][4] = {}, dv[8][4] = {}, s[8][4] = {}, dp[8][4] = {};
    for (int qt = block_begin, st = 0; qt < block_end; qt++, st = (st + 1) % BWD_STAGES) {
        stage_ready<BWD_STAGES>();             // tile qt is in; tile qt-1's stage is free
        load_queries(qt + BWD_STAGES - 1);     // into the stage tile qt-1 used
        if (qt >= qt_begin && qt < qt_end) {   // uniform over the warpgroup, as wgmma requires
            u64 dq = make_desc(Qs(st)), ddo = make_desc(dOs(st));
            wgmma_fence();
            for (int ks = 0; ks < 4; ks++)     // S^T = K Q^T: rows = keys, columns = queries
                wgmma_ss(s, dk_desc + 2 * ks, dq + 2 * ks, ks);
            wgmma_commit();
            for (int ks = 0; ks < 4; ks++)     // dP^T = V dO^T
                wgmma_ss(dp, dv_desc + 2 * ks, ddo + 2 * ks, ks);
            wgmma_commit();
            wgmma_wait<1>();                   // S^T is done, dP^T may still run
            fence_acc(s);
            const float* ls = lse_s[st];
            for (int nt = 0; nt < 8; nt++) {
                float2 l2 = *reinterpret_cast<const float2*>(ls + nt * 8 + 2 * q);
                for (int e = 0; e < 4; e++) {
                    int query = qt * TILE + nt * 8 + 2 * q + e % 2;
                    float pe = exp2_ftz(fmaf(s[nt][e], scale_log2, -(e % 2 ? l2.y : l2.x)));
                    if (partly_masked(qt, kt) && !sees(query, keys[e / 2])) pe = 0.0f;   // a hidden key
                    s[nt][e] = pe;
                }
            }
            u32 pf[4][4];
            to_a(pf, s);
            wgmma_fence();                     // pf was written by ordinary instructions
            for (int ks = 0; ks < 4; ks++)     // dV += P^T dO: 16 queries = 2048 bytes a k-step
                wgmma_rs(dv, pf[ks], ddo + 128 * ks);
            wgmma_commit();
            wgmma_wait<1>();                   // dP^T is done, dV's product may still run
            fence_acc(dp);
            const float* dl = delta_s[st];
            for (int nt = 0; nt < 8; nt++) {
                float2 d2 = *reinterpret_cast<const float2*>(dl + nt * 8 + 2 * q);
                for (int e = 0; e < 4; e++)    // dS^T
                    dp[nt][e] = s[nt][e] * (dp[nt][e] - (e % 2 ? d2.y : d2.x));
            }
            u32 sf[4][4];
            to_a(sf, dp);
            // this tile pair's dS^T in bf16 for the dQ kernel, staged before dK's product is
            // issued (its A registers must not be touched while it runs)
            stage_rows(stage, dp, 1.0f);
            wgmma_fence();
            for (int ks = 0; ks < 4; ks++)     // dK += dS^T Q
                wgmma_rs(dk, sf[ks], dq + 128 * ks);
            wgmma_commit();
            __syncwarp();                      // whole 128-byte lines while dK's product runs
            store_rows(ds + ds_tile(bh, tiles, qt, kt) + (size_t)warp * 16 * TILE, TILE, stage, 16);
            wgmma_wait<0>();                   // done reading the stage before the next barrier
            fence_acc(dv);
            fence_acc(dk);
            fence_frag(pf);
            fence_frag(sf);
        }
    }
    cp_async_wait<0>();                        // only empty groups can be pending
    if (bias_partial) {
        __syncthreads();                       // everyone is done with lse_s and delta_s
        static_assert(BWD_WGS == 1, "column_sums takes the 4 warps of one warpgroup");
        float* dst = bias_partial + ((size_t)b * tiles + kt) * 3 * C + h * HS;
        column_sums(dst + C, dk, scale, keys[0] < T, keys[1] < T, &lse_s[0][0]);
        column_sums(dst + 2 * C, dv, 1.0f, keys[0] < T, keys[1] < T, &lse_s[0][0]);
    }
    // dK * scale and dV, each through this warp's staging rows: whole 128-byte rows of dqkv
    int rows = T - key0 < 16 ? T - key0 : 16;
    bf16* dst = dqkv + ((size_t)b * T + key0) * 3 * C + h * HS;
    __syncwarp();
    stage_rows(stage, dk, scale);
    __syncwarp();
    store_rows(dst + C, 3 * C, stage, rows);
    __syncwarp();
    stage_rows(stage, dv, 1.0f);
    __syncwarp();
    store_rows(dst + 2 * C, 3 * C, stage, rows);
}

// ---------------------------------------------------------------------------------------------
// The backward's dQ kernel on wgmma: kernels/flash_attention.cu's flash_attention_backward_dq
// (same arguments, the same bits out) with its ldmatrix + mma.sync products replaced by wgmma.
// For each head and query tile qt: dQ = scale * sum over key tiles kt <= qt of dS(qt, kt) K(kt),
// in kt order, from the dS^T tiles the dK/dV kernel stored (ds_tile: row = key, column = query).
//
// Block: DQ_WGS warpgroups (default 2), warpgroup w owning query tile DQ_WGS*i + w, 64 rows;
// i = gridDim.x - 1 - blockIdx.x, so each head's heaviest query tiles start first. Grid
// (ceil(tiles / DQ_WGS), B*NH). The K tiles stream through shared memory, each shared by the
// block's warpgroups, each warpgroup streaming its own dS tiles of the key tiles it sees
// (its products sit under a condition uniform over the warpgroup; the barriers stay
// block-wide, and one past the last query tile, at an odd tile count, only copies K).
// Pipeline: DQ_STAGES stages (default 4) of (K tile, a dS tile per warpgroup) in the 128-byte
// swizzle, filled by cp.async, one commit group a stage (empty past the last tile, so the group
// count stays uniform), one barrier a key tile: wait for stage kt, fence.proxy.async, barrier,
// start filling the stage that tile kt-1 used, then this tile's 4 wgmmas, waited for at once
// (they add into the same registers; the other warpgroups and blocks keep the tensor cores busy).
// Dynamic shared memory DQ_STAGES * (DQ_WGS + 1) * 8 KB + 1 KB to align = 99328 bytes.
// The product: dQ += dS K as 4 k-steps of m64n64k16 over 16 keys; A = dS is the stored dS^T
// tile read M-major (its rows are keys, 64 queries a row), B = K row-major read N-major, both
// with the transpose bits: the same tile shape as the forward's V, 2048 bytes a k-step.
// dQ * scale leaves through the warpgroup's first dS buffer (free after the loop) as whole
// 128-byte lines of dqkv; with bias_partial, its column sums go there first (column_sums).
// Why faster than mma.sync (the same bits): wgmma reads dS and K from shared memory once per
// warpgroup instead of ldmatrix per warp, one barrier a tile instead of two, each K tile copied
// serves 128 query rows, and the stages in flight hide the dS reads, which bound the kernel.
// The warpgroup and stage counts measured are in docs/performance.md.
#define DQ_THREADS (DQ_WGS * 128)
#define DQ_STAGE_ELEMS ((DQ_WGS + 1) * TILE * HS)   // a stage: the K tile, a dS tile a warpgroup
#define DQ_SMEM (DQ_STAGES * DQ_STAGE_ELEMS * 2 + 1024)
// as many blocks an SM as the shared memory admits (228 KB, 1 KB reserved a block), at most
// 2048 threads: registers never limit them
#define DQ_SMEM_BLOCKS (233472 / (DQ_SMEM + 1024))
#define DQ_BLOCKS_PER_SM (DQ_SMEM_BLOCKS * DQ_THREADS > 2048 ? 2048 / DQ_THREADS : DQ_SMEM_BLOCKS)
static_assert(DQ_STAGES >= 2, "DQ_STAGES: at least double-buffered");

extern "C" __global__ void __launch_bounds__(DQ_THREADS, DQ_BLOCKS_PER_SM)
flash_attention_backward_dq_wgmma(bf16* dqkv, float* bias_partial, const bf16* ds,
                                  const bf16* qkv, int T, int NH, float scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16* smem = align_1024(smem_raw);
    auto Ks = [&](int st) { return smem + st * DQ_STAGE_ELEMS; };
    auto dSs = [&](int st, int w) { return smem + st * DQ_STAGE_ELEMS + (1 + w) * TILE * HS; };

    int tiles = (T + TILE - 1) / TILE;
    int i = gridDim.x - 1 - blockIdx.x;        // the heaviest query tiles start first
    int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * HS;
    int wg = threadIdx.x / 128, tid = threadIdx.x % 128, warp = tid / 32;
    int qt = DQ_WGS * i + wg;                  // this warpgroup's query tile (may be >= tiles)
    bool has_rows = qt < tiles;
    // the key tiles this warpgroup sees (none without rows), and the block's: from warpgroup 0's
    // first to the last warpgroup's last
    int kt_begin = key_tiles_begin(qt), kt_end = has_rows ? key_tiles_end(qt) : 0;
    int block_begin = key_tiles_begin(DQ_WGS * i);
    int block_end = min(key_tiles_end(DQ_WGS * i + DQ_WGS - 1), tiles);
    const bf16* kp = qkv + (size_t)b * T * 3 * C + C + h * HS;
    const bf16* dsp = ds + (has_rows ? ds_tile(bh, tiles, qt, 0) : 0);   // tile kt at kt * TILE * TILE

    // stage st <- key tile kt: K's rows (rows past T zeros) by all threads, and each
    // warpgroup's dS tile (qt, kt) where it sees kt. A thread copies chunk lc of rows lr,
    // lr + KSTEP, ... (multiples of 8 apart, so one swizzled column: lc ^ lr % 8)
    constexpr int KSTEP = DQ_THREADS / 8;      // K rows a pass of the block
    const int lr = threadIdx.x / 8, lc = threadIdx.x % 8, sw = (lc ^ (lr % 8)) * 8;
    const bf16* k_thr = kp + (size_t)lr * 3 * C + lc * 8;
    const bf16* ds_thr = dsp + (tid / 8) * TILE + lc * 8;
    auto load_stage = [&](int kt, int st) {
        if (kt < block_end) {
            for (int j = 0; j < TILE / KSTEP; j++) {
                bool valid = kt * TILE + lr + j * KSTEP < T;
                cp_async16(Ks(st) + (lr + j * KSTEP) * HS + sw,
                           valid ? k_thr + ((size_t)kt * TILE + j * KSTEP) * 3 * C : kp, valid);
            }
            if (kt >= kt_begin && kt < kt_end)
                for (int j = 0; j < 4; j++)    // 16 rows a pass of the warpgroup
                    cp_async16(dSs(st, wg) + (tid / 8 + j * 16) * HS + sw,
                               ds_thr + (size_t)kt * TILE * TILE + j * 16 * TILE, true);
        }
        cp_async_commit();
    };

    for (int s = 0; s < DQ_STAGES - 1; s++) load_stage(block_begin + s, s);
    float dq[8][4] = {};
    for (int kt = block_begin, st = 0; kt < block_end; kt++, st = (st + 1) % DQ_STAGES) {
        stage_ready<DQ_STAGES>();              // tile kt is in; tile kt-1's stage is free
        load_stage(kt + DQ_STAGES - 1, (st + DQ_STAGES - 1) % DQ_STAGES);
        if (kt >= kt_begin && kt < kt_end) {   // uniform over the warpgroup, as wgmma requires
            const u64 da = make_desc(dSs(st, wg)), db = make_desc(Ks(st));
            wgmma_fence();
            for (int ks = 0; ks < 4; ks++)     // 16 keys = 16 swizzled rows = 2048 bytes
                wgmma_ss<1>(dq, da + 128 * ks, db + 128 * ks, 1);
            wgmma_commit();
            wgmma_wait<0>();                   // done reading stage st before the next barrier
            fence_acc(dq);
        }
    }
    cp_async_wait<0>();                        // only empty groups can be pending
    __syncthreads();                           // every wgmma has read its last stage
    int row0 = qt * TILE + warp * 16, g = tid % 32 / 4;
    if (bias_partial)                          // the stages are free now: stage 1 as scratch
        column_sums(has_rows ? bias_partial + ((size_t)b * tiles + qt) * 3 * C + h * HS : nullptr,
                    dq, scale, row0 + g < T, row0 + g + 8 < T,
                    reinterpret_cast<float*>(dSs(1, wg)));
    if (has_rows) {
        bf16* stage = dSs(0, wg) + warp * 16 * HS;
        stage_rows(stage, dq, scale);
        __syncwarp();
        store_rows(dqkv + ((size_t)b * T + row0) * 3 * C + h * HS, (size_t)3 * C, stage,
                   min(T - row0, 16));
    }
}
