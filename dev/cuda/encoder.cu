// Earlier versions of the encoder backward's dwte kernel; the latest version is production
// (kernels/encoder.cu, which also has the keys and the layout). Loaded by dev/cuda/encoder.py.
#include "common.cuh"

// v1: one thread per (run of equal tokens in the sorted keys, 8 channels) sums the whole run in
// order and adds it to dwte. Deterministic and short, but a frequent token's run (thousands of
// positions in a batch) is one thread's serial chain of loads: the tail of the kernel.
extern "C" __global__ void encoder_backward_wte_v1(bf16* dwte, const bf16* dout,
                                                   const long long* keys, int N, int C) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * (C / 8)) return;
    int j = idx / (C / 8), c = idx % (C / 8) * 8;
    int token = (int)(keys[j] >> 32);
    if (j > 0 && (int)(keys[j - 1] >> 32) == token) return;   // not the start of a run
    float acc[8] = {0.0f};
    for (; j < N && (int)(keys[j] >> 32) == token; j++) {
        x128 d = load128(dout + (size_t)(int)(keys[j] & 0xffffffff) * C + c);
        for (int k = 0; k < x128::size; k++) acc[k] += to_float(d[k]);
    }
    bf16* row = dwte + (size_t)token * C + c;
    x128 r = load128(row);
    for (int k = 0; k < x128::size; k++) r[k] = to_bf16(to_float(r[k]) + acc[k]);
    store128(row, r);
}
