// Other versions of the matmul's bias handling; llmpy's are cuBLASLt's bias epilogue forward and
// kernels/matmul.cu backward. Layout: out, dout (N, OC) row-major, bias (OC), OC % 8 == 0.
#include "common.cuh"

// version 1: add the bias after the gemm (llm.c's first add_bias): out makes one more round
// trip through memory, and is rounded to bf16 twice (the gemm's result, then the sum).
extern "C" __global__ void add_bias_v1(bf16* out, const bf16* bias, int N, int OC) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= (size_t)N * OC) return;
    x128 o = load128(out + i), b = load128(bias + i % OC);
    for (int k = 0; k < x128::size; k++) o[k] = to_bf16(to_float(o[k]) + to_float(b[k]));
    store128(out + i, o);
}

// version 2: out[r, :] = bias, then the gemm with beta = 1 adds its product in fp32 and rounds out
// to bf16 once: one pass over out (this write) before the gemm instead of a read and a write after
// it. 8 columns (128 bits) per thread; OC % 8 == 0, so a packet never straddles two rows. N*OC
// exceeds 2^31 for the LM head: size_t indices.
extern "C" __global__ void bias_broadcast_v2(bf16* out, const bf16* bias, int N, int OC) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= (size_t)N * OC) return;
    store128(out + i, load128(bias + i % OC));
}

// versions 9 and 10's bias gradient: dbias (OC) += sums (OC), the column sums that cuBLASLt's
// BGRADB (9: of dout, in the dweight product) or DGELU_BGRAD epilogue (10: of dinp, in the dinp
// product) wrote into its bias vector (it overwrites; dbias accumulates over micro-steps). The
// epilogue sums in fp32 but writes bf16: cuBLASLt refuses an fp32 vector with bf16 matrices,
// so the gradient is rounded twice.
extern "C" __global__ void bias_accumulate(bf16* dbias, const bf16* sums, int OC) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < OC) dbias[i] = to_bf16(to_float(dbias[i]) + to_float(sums[i]));
}
