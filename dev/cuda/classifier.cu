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
