// Fused classifier: softmax cross-entropy, forward and backward in one kernel, in place.
// logits (N, Vp) bf16 row-major, N = B*T rows; columns 0..V are the real vocabulary and V..Vp
// padding that is never read. For each row, with p = softmax(logits[0..V]) in fp32:
//   losses[row]        = logsumexp(logits[0..V]) - logits[target]        (fp32)
//   logits[0..V]      <- dloss * (p - onehot(target))                     (dlogits, bf16)
//   logits[V..Vp]     <- 0
// One block per row. Pass 1 reads the row once for both the max and the sum of exponentials
// (online softmax: the running sum is rescaled whenever the running max grows); pass 2 reads it
// again and overwrites it with dlogits. A row is 100 KB, so pass 2 mostly hits L2; pass 1 walks
// the row backwards so that the start of the row, where pass 2 begins, was read last.
// Vp is a multiple of 8, V need not be: the packet straddling V is masked element by element.
#include "common.cuh"

// dlogits are next read by the LM head's backward matmul, long after: don't keep them in cache
__device__ __forceinline__ void store128cs(bf16* p, const x128& x) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&x));
}

// targets are (B, T) with row stride target_stride (a (b, t) slice of a larger buffer), so
// row = b*T + t reads targets[b*target_stride + t]
extern "C" __global__ void __launch_bounds__(1024)
classifier_forward_backward(bf16* logits, float* losses, const int* targets, int T,
                            int target_stride, int V, int Vp, float dloss) {
    int row = blockIdx.x, tid = threadIdx.x, nthreads = blockDim.x;
    bf16* x = logits + (size_t)row * Vp;
    int target = targets[(row / T) * target_stride + row % T];

    // pass 1: per thread, running max m and sum s of exp(logit - m) over the real columns
    float m = -INFINITY, s = 0.0f;
    int real_packets = (V + x128::size - 1) / x128::size;    // packets with a real column
    for (int i = real_packets - 1 - tid; i >= 0; i -= nthreads) {
        x128 packet = load128(x + i * x128::size);
        float v[x128::size];
        float packet_max = -INFINITY;
        for (int k = 0; k < x128::size; k++) {
            v[k] = i * x128::size + k < V ? to_float(packet[k]) : -INFINITY;
            packet_max = fmaxf(packet_max, v[k]);
        }
        if (packet_max > m) {
            s *= expf(m - packet_max);      // m = -inf at first: s = 0 stays 0
            m = packet_max;
        }
        for (int k = 0; k < x128::size; k++) s += expf(v[k] - m);
    }
    float row_max = block_max(m);
    float sum = block_sum(s * expf(m - row_max));   // threads without a packet add 0
    float scale = dloss / sum;
    float logsumexp = row_max + logf(sum);

    // pass 2: dlogits over the whole row; packets entirely in the padding are not read
    for (int i = tid; i < Vp / x128::size; i += nthreads) {
        int col0 = i * x128::size;
        x128 out;
        if (col0 >= V) {
            for (int k = 0; k < x128::size; k++) out[k] = to_bf16(0.0f);
        } else {
            x128 packet = load128cs(x + col0);
            for (int k = 0; k < x128::size; k++) {
                int col = col0 + k;
                float logit = to_float(packet[k]);
                float g = expf(logit - row_max) * scale;        // dloss * p
                if (col == target) {
                    g -= dloss;
                    losses[row] = logsumexp - logit;            // exactly one thread gets here
                }
                out[k] = to_bf16(col < V ? g : 0.0f);
            }
        }
        store128cs(x + col0, out);
    }
}
