// Earlier versions of the fused classifier; the latest is kernels/classifier.cu. Same math and
// layout: logits (N, Vp) bf16, one block per row, losses[row] = logsumexp - logits[target] and
// the row overwritten in place by dloss * (softmax - onehot(target)), padding V..Vp set to 0.
#include "common.cuh"

// version 1: the textbook three passes, one bf16 per load: the max, the sum of exp(x - max),
// then dlogits. Reads the row three times with 2-byte loads.
extern "C" __global__ void classifier_forward_backward_v1(bf16* logits, float* losses,
                                                          const int* targets, int V, int Vp,
                                                          float dloss) {
    int row = blockIdx.x, tid = threadIdx.x, nthreads = blockDim.x;
    bf16* x = logits + (size_t)row * Vp;
    int target = targets[row];
    float m = -INFINITY;
    for (int i = tid; i < V; i += nthreads) m = fmaxf(m, to_float(x[i]));
    float row_max = block_max(m);
    float s = 0.0f;
    for (int i = tid; i < V; i += nthreads) s += expf(to_float(x[i]) - row_max);
    float sum = block_sum(s);
    float scale = dloss / sum;
    for (int i = tid; i < Vp; i += nthreads) {
        float g = 0.0f;
        if (i < V) {
            float logit = to_float(x[i]);
            g = expf(logit - row_max) * scale;
            if (i == target) {
                g -= dloss;
                losses[row] = row_max + logf(sum) - logit;
            }
        }
        x[i] = to_bf16(g);
    }
}

// version 2: online softmax (max and sum in one pass), 128-bit loads. Pass 2 reads the row again
// and overwrites it with dlogits; a row is 100 KB, so pass 2 hits L2 only where the row is still
// there: pass 1 walks the row backwards so that the start of the row, where pass 2 begins, was
// read last. Vp is a multiple of 8, V need not be: the packet straddling V is masked element by
// element. targets are (B, T) with row stride target_stride (a (b, t) slice of a larger buffer),
// so row = b*T + t reads targets[b*target_stride + t].
extern "C" __global__ void __launch_bounds__(1024)
classifier_forward_backward_v2(bf16* logits, float* losses, const int* targets, int T,
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
