// Token + position embedding.
//   forward:  out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
//   backward: dwte[v,:] += sum of dout[b,t,:] over the positions with inp[b,t] == v
//             dwpe[t,:] += sum over b of dout[b,t,:]
// out, dout (B,T,C) and wte, dwte (Vp,C), wpe, dwpe (maxT,C) are row-major bf16; C % 8 == 0, so
// each thread moves 8 channels with one 128-bit access. inp (B,T) int32 has row stride `ldi`
// (the model passes a (b,t) slice of its (B,T) input buffer). Sums run in fp32.
//
// dwte without float atomics, in a fixed order: the N = B*T positions are keyed by
// (token << 32 | position) and sorted on the GPU, so each token's positions form a run in position
// order (the keys are unique, so every sort gives the same order). The sorted positions are cut
// into segments of `seg` positions; one thread per (segment, 8 channels) sums its segment piece
// by piece (a piece: the segment's positions of one token). A run inside one segment goes
// straight into dwte; a run crossing segments leaves its pieces' sums in a workspace, and a
// second kernel adds them up in segment order. Frequent tokens (thousands of positions in a
// batch) are thus spread over many threads instead of one long serial loop.
#include "common.cuh"

extern "C" __global__ void encoder_forward(bf16* out, const int* inp, const bf16* wte,
                                           const bf16* wpe, int N, int T, int C, int ldi) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // one thread per (position, 8 channels)
    if (idx >= N * (C / 8)) return;
    int n = idx / (C / 8), c = idx % (C / 8) * 8;
    int t = n % T;
    int token = inp[n / T * ldi + t];
    x128 w = load128(wte + (size_t)token * C + c), p = load128(wpe + (size_t)t * C + c), r;
    for (int k = 0; k < x128::size; k++) r[k] = to_bf16(to_float(w[k]) + to_float(p[k]));
    store128(out + (size_t)n * C + c, r);
}

// ------------------------------------------------------------------------------------------------
// backward

__device__ __forceinline__ int token_of(long long key) { return (int)(key >> 32); }
__device__ __forceinline__ int position_of(long long key) { return (int)(key & 0xffffffff); }

__device__ __forceinline__ void add_to_row(bf16* row, const float* acc) {
    x128 r = load128(row);
    for (int k = 0; k < x128::size; k++) r[k] = to_bf16(to_float(r[k]) + acc[k]);
    store128(row, r);
}

__device__ __forceinline__ void store8(float* p, const float* acc) {
    f128 lo, hi;
    for (int k = 0; k < f128::size; k++) { lo[k] = acc[k]; hi[k] = acc[k + f128::size]; }
    store128(p, lo);
    store128(p + f128::size, hi);
}

__device__ __forceinline__ void add8(float* acc, const float* p) {
    f128 lo = load128(p), hi = load128(p + f128::size);
    for (int k = 0; k < f128::size; k++) { acc[k] += lo[k]; acc[k + f128::size] += hi[k]; }
}

// keys[n] = token << 32 | n for the positions n = b*T + t (tokens are >= 0: the key order is
// token-major, position-minor)
extern "C" __global__ void encoder_backward_keys(long long* keys, const int* inp, int N, int T,
                                                 int ldi) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    keys[n] = (long long)inp[n / T * ldi + n % T] << 32 | n;
}

#define SEGMENT_UNROLL 4   // dout rows loaded before any is summed: memory-level parallelism

// One thread per (segment s, 8 channels). A piece that continues a run from segment s-1 is
// stored in head[s]; a piece that starts a run continuing into segment s+1 in tail[s] (a run
// covering the whole segment is a head); a whole run is added to dwte. head, tail: (segments, C).
extern "C" __global__ void encoder_backward_wte_segments(bf16* dwte, float* head, float* tail,
                                                         const bf16* dout, const long long* keys,
                                                         int N, int C, int seg) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int segments = (N + seg - 1) / seg;
    if (idx >= segments * (C / 8)) return;
    int s = idx / (C / 8), c = idx % (C / 8) * 8;
    int s0 = s * seg, s1 = min(s0 + seg, N);
    int before = s0 > 0 ? token_of(keys[s0 - 1]) : -1;   // the token ending segment s-1
    int after = s1 < N ? token_of(keys[s1]) : -1;        // the token starting segment s+1
    float acc[8] = {0.0f};
    int first = s0;                                       // where the current piece began
    for (int j0 = s0; j0 < s1; j0 += SEGMENT_UNROLL) {
        long long key[SEGMENT_UNROLL];
        x128 d[SEGMENT_UNROLL];
#pragma unroll
        for (int u = 0; u < SEGMENT_UNROLL; u++) {
            key[u] = keys[min(j0 + u, s1 - 1)];   // past the segment's end: loaded, never summed
            d[u] = load128(dout + (size_t)position_of(key[u]) * C + c);
        }
#pragma unroll
        for (int u = 0; u < SEGMENT_UNROLL; u++) {
            int j = j0 + u;
            if (j >= s1) break;
            int token = token_of(key[u]);
            for (int k = 0; k < x128::size; k++) acc[k] += to_float(d[u][k]);
            long long next = u + 1 < SEGMENT_UNROLL ? key[u + 1] : keys[min(j + 1, N - 1)];
            if (j + 1 < s1 && token_of(next) == token) continue;
            // the piece [first, j] is complete
            if (first == s0 && token == before) store8(head + (size_t)s * C + c, acc);
            else if (j + 1 == s1 && token == after) store8(tail + (size_t)s * C + c, acc);
            else add_to_row(dwte + (size_t)token * C + c, acc);
            for (int k = 0; k < x128::size; k++) acc[k] = 0.0f;
            first = j + 1;
        }
    }
}

// One block per segment s. Where a run starts in segment s and crosses into s+1 (it then owns
// tail[s]), the block finds the run's last segment and adds tail[s] + head[s+1] + ... +
// head[last], in that order, to the run's dwte row.
extern "C" __global__ void encoder_backward_wte_runs(bf16* dwte, const float* head,
                                                     const float* tail, const long long* keys,
                                                     int N, int C, int seg) {
    int s = blockIdx.x;
    int s0 = s * seg, s1 = min(s0 + seg, N);
    int token = token_of(keys[s1 - 1]);
    bool starts_here = s0 == 0 || token_of(keys[s0 - 1]) != token;
    bool crosses = s1 < N && token_of(keys[s1]) == token;
    if (!(starts_here && crosses)) return;   // uniform over the block
    // The run continues past segment q iff keys[(q+1)*seg] still has its token: true for
    // q = s, s+1, ..., last-1 and false from `last` on, so counting the true ones finds `last`.
    int last = s + 1;
    for (;;) {
        int j = (last + threadIdx.x + 1) * seg;
        int n = __syncthreads_count(j < N && token_of(keys[j]) == token);
        last += n;
        if (n < (int)blockDim.x) break;
    }
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
        float acc[8] = {0.0f};
        add8(acc, tail + (size_t)s * C + c);
#pragma unroll 4
        for (int q = s + 1; q <= last; q++) add8(acc, head + (size_t)q * C + c);
        add_to_row(dwte + (size_t)token * C + c, acc);
    }
}

// One thread per (t, 8 channels), summing over b in order.
extern "C" __global__ void encoder_backward_wpe(bf16* dwpe, const bf16* dout, int B, int T,
                                                int C) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= T * (C / 8)) return;
    int t = idx / (C / 8), c = idx % (C / 8) * 8;
    float acc[8] = {0.0f};
#pragma unroll 4
    for (int b = 0; b < B; b++) {   // independent loads: unrolled, several are in flight
        x128 d = load128cs(dout + ((size_t)b * T + t) * C + c);
        for (int k = 0; k < x128::size; k++) acc[k] += to_float(d[k]);
    }
    add_to_row(dwpe + (size_t)t * C + c, acc);
}
