// The layernorm backward's arithmetic on a row held in registers, shared by kernels/layernorm.cu
// (layernorm_backward, layernorm_backward_sums) and dev/cuda/layernorm_v5.cu (the same math fed
// through a cp.async pipeline). With n = (x - mean) * rstd and g = dout * weight:
//   dinp += rstd * (g - mean(g) - n * mean(g * n)),   dbias += dout,   dweight += dout * n
#pragma once
#include "common.cuh"

// An empty asm that the compiler must assume changes v: the backward's second pass over a row
// then converts the packed bf16 again (a few ALU instructions) instead of keeping the first
// pass's floats of dout, x and weight alive across the row sums (164 registers instead of 128
// at 3 chunks).
__device__ __forceinline__ void opaque(x128& v) {
    unsigned* u = reinterpret_cast<unsigned*>(&v);
    for (int k = 0; k < 4; k++) asm("" : "+r"(u[k]));
}

// One row, C <= 256 * CHUNKS: lane l holds the chunks c = 8*l + 256*i of the row's dout d, x v
// and dinp r and of the weight w; m, s the row's mean and rstd. dbias and dweight of the lane's
// channels accumulate into db and dw (fp32); dinp + dx, rounded to bf16, is stored at dinp_row
// (the row's first element) and, with DINP_SUMS, added to dx_sums (the columns of dinp summed
// as stored). A first pass for the row sums of g and g * n, a second for dx.
template <int CHUNKS, bool DINP_SUMS>
__device__ __forceinline__ void backward_row(bf16* dinp_row, x128 (&d)[CHUNKS], x128 (&v)[CHUNKS],
                                             x128 (&r)[CHUNKS], x128 (&w)[CHUNKS], float m,
                                             float s, float (&db)[CHUNKS][x128::size],
                                             float (&dw)[CHUNKS][x128::size],
                                             float (&dx_sums)[DINP_SUMS ? CHUNKS : 1][x128::size],
                                             int lane, int C) {
    float sum_g = 0.0f, sum_gn = 0.0f;
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        if (lane * 8 + 256 * i >= C) continue;
        for (int k = 0; k < x128::size; k++) {
            float dk = to_float(d[i][k]), n = (to_float(v[i][k]) - m) * s;
            float g = dk * to_float(w[i][k]);
            sum_g += g;
            sum_gn += g * n;
            db[i][k] += dk;
            dw[i][k] += dk * n;
        }
    }
    float mean_g = warp_sum(sum_g) / C, mean_gn = warp_sum(sum_gn) / C;
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) { opaque(d[i]); opaque(v[i]); opaque(w[i]); }
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
        int c = lane * 8 + 256 * i;
        if (c >= C) continue;
        for (int k = 0; k < x128::size; k++) {
            float n = (to_float(v[i][k]) - m) * s, g = to_float(d[i][k]) * to_float(w[i][k]);
            r[i][k] = to_bf16(to_float(r[i][k]) + s * (g - mean_g - n * mean_gn));
            if (DINP_SUMS) dx_sums[i][k] += to_float(r[i][k]);
        }
        store128cs(dinp_row + c, r[i]);
    }
}
