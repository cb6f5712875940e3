// Fused classifier: softmax cross-entropy, forward and backward in one kernel, in place.
// logits (N, Vp) bf16 row-major, N = B*T rows; columns 0..V are the real vocabulary and V..Vp
// padding that is never read. For each row, with p = softmax(logits[0..V]) in fp32:
//   losses[row]        = logsumexp(logits[0..V]) - logits[target]        (fp32)
//   logits[0..V]      <- dloss * (p - onehot(target))                     (dlogits, bf16)
//   logits[V..Vp]     <- 0
// One block per row, two passes over it. Pass 1 reads the row from global memory and keeps its
// first `cached` 128-bit packets in shared memory (the launcher sizes the cache so that two blocks
// share an SM: on an H100/H200 a whole GPT-2 row, 50304 bf16 = 100 KB, fits), computing the max
// and the sum of exponentials on the way (online softmax: the running sum is rescaled when the
// running max grows, at most once per packet). Pass 2 takes the row back from shared memory
// (packets past the cache from global memory again) and overwrites it with dlogits. So the logits
// cross DRAM twice (read once, written once: 13.2 GB at GPT-2 124M, B*T = 65536) where a second
// read from global memory made it up to three times.
// Exponentials are taken in log2 units: exp(x - m) = 2^(x*log2(e) - m*log2(e)), one FFMA and one
// MUFU.EX2 per element, against ~10 instructions for expf; with m*log2(e) rounded once per row
// (or per new running max) the shared factor 2^(rounding error) cancels between p's numerator
// and sum, and moves the loss by < 1e-6 of the logits' magnitude.
// Each thread loads UNROLL packets (i = i0 + u * blockDim.x: coalesced for each u) before using
// any, so that several 128-bit loads are in flight. Every thread sums its packets in a fixed order
// and the block reductions have a fixed order: deterministic.
// Vp is a multiple of 8, V need not be: the packet straddling V is masked.
#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define UNROLL 4

// the packet of columns col0..col0+8 as floats; columns >= V (padding, possibly garbage) as -inf,
// so that their exponentials are 0 in both passes. A bf16 is the top half of an fp32: each 32-bit
// word holds two, the even column in its low half (one shift or mask per column).
__device__ __forceinline__ void unpack(float v[x128::size], const x128& packet, int col0, int V) {
    const unsigned int* w = reinterpret_cast<const unsigned int*>(&packet);
    for (int k = 0; k < x128::size / 2; k++) {
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
    }
    if (col0 + x128::size > V) {
        for (int k = 0; k < x128::size; k++) if (col0 + k >= V) v[k] = -INFINITY;
    }
}

// pass 1's work on one packet: the running max m, mL = m * log2(e), and the running sum
// s = sum of 2^(logit * log2(e) - mL), rescaled at most once per packet
__device__ __forceinline__ void accumulate(float& m, float& mL, float& s, const x128& packet,
                                           int col0, int V) {
    float v[x128::size];
    unpack(v, packet, col0, V);
    float packet_max = v[0];
    for (int k = 1; k < x128::size; k++) packet_max = fmaxf(packet_max, v[k]);
    if (packet_max > m) {
        float packet_max_L = packet_max * LOG2E;
        s *= exp2_ftz(mL - packet_max_L);     // mL = -inf at first: s = 0 stays 0
        m = packet_max;
        mL = packet_max_L;
    }
    for (int k = 0; k < x128::size; k++) s += exp2_ftz(fmaf(v[k], LOG2E, -mL));
}

// pass 2's work on one packet: dloss * (p - onehot(target)) written over it in global memory,
// and for the target's packet the row's loss
struct RowSoftmax { float max, max_L, sum, scale; };
__device__ __forceinline__ void write_dlogits(bf16* x, float* loss, const x128& packet, int col0,
                                              int V, int target, RowSoftmax r, float dloss) {
    float v[x128::size], g[x128::size];
    unpack(v, packet, col0, V);
    for (int k = 0; k < x128::size; k++) g[k] = exp2_ftz(fmaf(v[k], LOG2E, -r.max_L)) * r.scale;
    if ((unsigned)(target - col0) < (unsigned)x128::size) {     // one thread of the block
        for (int k = 0; k < x128::size; k++) {
            if (col0 + k == target) {
                g[k] -= dloss;
                *loss = r.max - v[k] + logf(r.sum);
            }
        }
    }
    x128 out;
    for (int k = 0; k < x128::size; k++) out[k] = to_bf16(g[k]);
    store128cs(x + col0, out);    // next read by the LM head's backward matmul, long after
}

// targets are (B, T) with row stride target_stride (a (b, t) slice of a larger buffer), so
// row = b*T + t reads targets[b*target_stride + t]. Dynamic shared memory: cached * 16 bytes.
extern "C" __global__ void __launch_bounds__(1024)
classifier_forward_backward(bf16* logits, float* losses, const int* targets, int T,
                            int target_stride, int V, int Vp, float dloss, int cached) {
    // packets 0..cached of the row, as int4 so that each moves with one 128-bit instruction
    extern __shared__ int4 row_cache[];
    int row = blockIdx.x, tid = threadIdx.x, nthreads = blockDim.x;
    bf16* x = logits + (size_t)row * Vp;
    int target = targets[(row / T) * target_stride + row % T];
    int packets = (V + x128::size - 1) / x128::size;    // packets with a real column

    // pass 1: thread tid takes packets tid, tid + nthreads, ..., UNROLL loads at a time
    float m = -INFINITY, mL = -INFINITY, s = 0.0f;
    for (int i0 = tid; i0 < packets; i0 += UNROLL * nthreads) {
        x128 p[UNROLL];
        for (int u = 0; u < UNROLL; u++) {
            int i = i0 + u * nthreads;
            if (i < packets) p[u] = load128(x + i * x128::size);
        }
        for (int u = 0; u < UNROLL; u++) {
            int i = i0 + u * nthreads;
            if (i >= packets) break;
            if (i < cached) row_cache[i] = *reinterpret_cast<const int4*>(&p[u]);
            accumulate(m, mL, s, p[u], i * x128::size, V);
        }
    }
    RowSoftmax r;
    r.max = block_max(m);
    r.max_L = r.max * LOG2E;     // the same rounding as mL of the threads holding the max
    r.sum = block_sum(s * exp2_ftz(mL - r.max_L));    // threads without a packet add 0 * 0
    r.scale = dloss / r.sum;

    // pass 2: the same packets in the same thread, so the cache needs no synchronisation: from
    // shared memory, then any past the cache from global memory
    int i = tid;
    for (; i < cached; i += nthreads) {
        x128 packet;
        *reinterpret_cast<int4*>(&packet) = row_cache[i];
        write_dlogits(x, losses + row, packet, i * x128::size, V, target, r, dloss);
    }
    for (; i < packets; i += nthreads)
        write_dlogits(x, losses + row, load128cs(x + i * x128::size), i * x128::size, V, target, r,
                      dloss);
    // packets entirely in the padding: zeros, never read
    x128 zeros;
    for (int k = 0; k < x128::size; k++) zeros[k] = to_bf16(0.0f);
    for (i = packets + tid; i < Vp / x128::size; i += nthreads) store128cs(x + i * x128::size, zeros);
}
