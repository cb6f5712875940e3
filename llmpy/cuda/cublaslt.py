"""cuBLASLt through ctypes: bf16 matmuls with a fused epilogue (bias, GELU, GELU's gradient), so
that the bias add and the GELU cost no pass of their own over the output (llm.c's
matmul_cublaslt). One job: matmul() below; llmpy/cuda/matmul.py decides what to call it with.
(The bias-gradient epilogues, BGRADB and DGELU_BGRAD, serve dev/cuda/matmul.py, which measured
them slower than our dbias kernels.)

Conventions as cuBLAS's gemm (llmpy/cuda/matmul.py): column-major, D (m, n) = op(A) op(B) with
k the contracted dimension; A, B, D bf16 with fp32 accumulation (CUBLAS_COMPUTE_32F, fp32
alpha/beta); the epilogue runs on the fp32 accumulator before D is rounded to bf16 once.
With accumulate, D = D + op(A) op(B) (beta = 1, C is D): still one rounding.

FP8 operands (Hopper and Ada): A and B of one byte each, E4M3 or E5M2 (not both E5M2), each with a
device fp32 scale that multiplies the accumulator (the inverse of the scale it was cast with:
llmpy/fp8.py), D bf16. cuBLASLt takes them in one layout only, both K-major: transa = T,
transb = N, and m, n, k multiples of 16 (llmpy/cuda/fp8.py arranges the operands so).

Each distinct call (shapes, epilogue, the alignment of every pointer) gets a plan the first time:
the descriptors and the algorithm cublasLtMatmulAlgoGetHeuristic picks for them, kept for the
life of the process. Later calls set the bias and aux pointers in the plan's descriptor (a host
write) and call cublasLtMatmul only.

Determinism (tests/gpu/test_matmul.py checks bits over two runs): cuBLAS's results are bit
reproducible run to run for a fixed algorithm, workspace size and GPU, with one stream active
(cuBLAS documentation, "Results reproducibility"). We pin all three: the heuristic's algorithm is
chosen once per plan (the heuristic itself is a deterministic function of the descriptors and the
device; the pointer alignments in a plan's key repeat too, as the buffers and their offsets do),
the workspace is one fixed 32 MiB buffer, and everything runs on CuPy's current stream,
the one stream of the training loop. Split-K (the dweight products, whose k is B*T while their
768-wide outputs have too few tiles to fill the GPU) is allowed with one reduction scheme only,
CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE: the parts go to the workspace in fp32 and are summed in
a separate pass in a fixed order (cublasLt.h lists no scheme with unordered atomics), and the
sum is rounded to bf16 once.
"""
import ctypes
import functools
import glob
import os

import cupy as cp
import ml_dtypes
import numpy as np

from llmpy.cuda.runtime import workspace

# Values from cublasLt.h and cublas_api.h of the PyPI wheel nvidia-cublas 13.10.0.20
# (nvidia/cu13/include/), and library_types.h of the CUDA 13.0 toolkit.
CUDA_R_32F, CUDA_R_16BF = 0, 14                # cudaDataType_t
CUDA_R_8F_E4M3, CUDA_R_8F_E5M2 = 28, 29
CUBLAS_COMPUTE_32F = 68                        # cublasComputeType_t
OP_N, OP_T = 0, 1                              # cublasOperation_t
# cublasLtMatmulDescAttributes_t (the attribute's C type in the comment: its size must match)
DESC_TRANSA = 3                                # int32_t
DESC_TRANSB = 4                                # int32_t
DESC_EPILOGUE = 7                              # uint32_t
DESC_BIAS_POINTER = 8                          # const void*
DESC_EPILOGUE_AUX_POINTER = 11                 # void*
DESC_EPILOGUE_AUX_LD = 12                      # int64_t: divisible by 8, >= D's rows
DESC_A_SCALE_POINTER = 17                      # const void*: fp32, multiplies op(A)
DESC_B_SCALE_POINTER = 18                      # const void*: fp32, multiplies op(B)
DESC_FAST_ACCUM = 25                           # int8_t: FP8 only; 0 promotes partial sums to
                                               # fp32 registers every few k, 1 never does
DESC_BIAS_DATA_TYPE = 26                       # int32_t
# cublasLtMatmulPreferenceAttributes_t
PREF_MAX_WORKSPACE_BYTES = 1                   # uint64_t
PREF_REDUCTION_SCHEME_MASK = 3                 # uint32_t
PREF_MIN_ALIGNMENT_A_BYTES, PREF_MIN_ALIGNMENT_B_BYTES = 5, 6       # uint32_t, default 256
PREF_MIN_ALIGNMENT_C_BYTES, PREF_MIN_ALIGNMENT_D_BYTES = 7, 8
# cublasLtReductionScheme_t: which split-K reductions an algorithm may use (NONE: no split-K)
REDUCTION_SCHEME_NONE, REDUCTION_SCHEME_INPLACE = 0, 1
REDUCTION_SCHEME_COMPUTE_TYPE, REDUCTION_SCHEME_OUTPUT_TYPE = 2, 4
# allowed: split-K parts summed in an fp32 workspace (or no split-K); dev/cuda/matmul.py times
# the other masks: no faster, and INPLACE sums the parts in bf16
REDUCTION_SCHEMES = REDUCTION_SCHEME_COMPUTE_TYPE
# cublasLtEpilogue_t
EPILOGUE_DEFAULT = 1
EPILOGUE_BIAS = 4                              # D = acc + bias (a vector of D's m rows)
EPILOGUE_GELU_AUX = 32 | 128                   # aux = acc, D = gelu(acc)
EPILOGUE_GELU_AUX_BIAS = 32 | 128 | 4          # aux = acc + bias, D = gelu(aux)
EPILOGUE_DGELU = 64 | 128                      # D = acc * gelu'(aux)
EPILOGUE_DGELU_BGRAD = 64 | 128 | 16           # D = acc * gelu'(aux), bias = D's row sums
EPILOGUE_BGRADB = 512                          # bias = sums of op(B) over k (a vector of D's n
                                               # columns), overwritten; D = acc
NEEDS_BIAS = {EPILOGUE_BIAS, EPILOGUE_GELU_AUX_BIAS, EPILOGUE_BGRADB, EPILOGUE_DGELU_BGRAD}
NEEDS_AUX = {EPILOGUE_GELU_AUX, EPILOGUE_GELU_AUX_BIAS, EPILOGUE_DGELU, EPILOGUE_DGELU_BGRAD}
FP8_TYPES = {CUDA_R_8F_E4M3, CUDA_R_8F_E5M2}

WORKSPACE_BYTES = 32 << 20      # what llm.c gives cuBLASLt on Hopper


class Algo(ctypes.Structure):                  # cublasLtMatmulAlgo_t
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class HeuristicResult(ctypes.Structure):       # cublasLtMatmulHeuristicResult_t
    _fields_ = [("algo", Algo), ("workspaceSize", ctypes.c_size_t), ("state", ctypes.c_int),
                ("wavesCount", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


assert ctypes.sizeof(Algo) == 64 and ctypes.sizeof(HeuristicResult) == 96

_P, _I32, _U64, _I64, _SZ = (ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint64, ctypes.c_int64,
                             ctypes.c_size_t)
_SIGNATURES = {   # every function returns cublasStatus_t, except GetStatusName
    "cublasLtCreate": [_P],
    "cublasLtMatmulDescCreate": [_P, _I32, _I32],
    "cublasLtMatmulDescSetAttribute": [_P, _I32, _P, _SZ],
    "cublasLtMatmulDescDestroy": [_P],
    "cublasLtMatrixLayoutCreate": [_P, _I32, _U64, _U64, _I64],
    "cublasLtMatrixLayoutDestroy": [_P],
    "cublasLtMatmulPreferenceCreate": [_P],
    "cublasLtMatmulPreferenceSetAttribute": [_P, _I32, _P, _SZ],
    "cublasLtMatmulPreferenceDestroy": [_P],
    "cublasLtMatmulAlgoGetHeuristic": [_P, _P, _P, _P, _P, _P, _P, ctypes.c_int,
                                       ctypes.POINTER(HeuristicResult),
                                       ctypes.POINTER(ctypes.c_int)],
    "cublasLtMatmul": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                       ctypes.POINTER(Algo), _P, _SZ, _P],
    "cublasLtGetStatusName": [ctypes.c_int],
}

# alpha = 1, beta = 0 or 1, read through host pointers (the descriptor's default pointer mode)
_ALPHA, _BETA, _BETA_ACCUMULATE = ctypes.c_float(1.0), ctypes.c_float(0.0), ctypes.c_float(1.0)
_BIAS_TYPES = {np.dtype(np.float32): CUDA_R_32F, np.dtype(ml_dtypes.bfloat16): CUDA_R_16BF}


def _library_path():
    """libcublasLt next to the libcublas CuPy loaded: libcublas needs libcublasLt, so the
    loader has usually mapped it already; /proc/self/maps names both."""
    cp.cuda.device.get_cublas_handle()          # makes sure CuPy has loaded libcublas
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/libcublas" in line}
    for path in sorted(paths):
        if os.path.basename(path).startswith("libcublasLt.so"):
            return path
    for path in sorted(paths):
        found = sorted(glob.glob(os.path.join(os.path.dirname(path), "libcublasLt.so*")))
        if found:
            return found[-1]
    return None


@functools.cache
def _lib():
    names = [_library_path(), "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise RuntimeError("cuBLASLt not found: no libcublasLt next to CuPy's libcublas, and none "
                           "of libcublasLt.so.13/.12/.so loads (set LD_LIBRARY_PATH to its folder)")
    for fn, argtypes in _SIGNATURES.items():
        getattr(lib, fn).argtypes = argtypes
        getattr(lib, fn).restype = ctypes.c_int
    lib.cublasLtGetStatusName.restype = ctypes.c_char_p
    return lib


def _check(status, what):
    if status != 0:
        name = _lib().cublasLtGetStatusName(status).decode()
        raise RuntimeError(f"{what} failed: {name} ({status})")


@functools.cache
def _context():
    """(handle, workspace pointer), made on first use: one per process, as the GPU is."""
    handle = ctypes.c_void_p()
    _check(_lib().cublasLtCreate(ctypes.byref(handle)), "cublasLtCreate")
    return handle, workspace("cublaslt", WORKSPACE_BYTES, np.uint8).data.ptr


def _set(setter, obj, attr, value):
    """Set one descriptor attribute from a ctypes value (its size is the attribute's C size)."""
    _check(setter(obj, attr, ctypes.byref(value), ctypes.sizeof(value)), f"set attribute {attr}")


def _alignment(ptr):
    """The largest power of two dividing the address, up to cuBLASLt's default of 256 bytes
    (0 for no pointer): what the algorithm may assume about it."""
    return min(ptr & -ptr, 256)


_plans = {}


def _plan(key, bias_ptr, aux_ptr):
    """Descriptors and algorithm for one kind of call: (desc, A, B, D layouts, algo)."""
    (transa, transb, m, n, k, lda, ldb, ldd, epilogue, bias_type, choice, schemes,
     align_a, align_b, align_d, _, _, a_type, b_type, fast_accum) = key
    lib, (handle, _) = _lib(), _context()
    desc = ctypes.c_void_p()
    _check(lib.cublasLtMatmulDescCreate(ctypes.byref(desc), CUBLAS_COMPUTE_32F, CUDA_R_32F),
           "cublasLtMatmulDescCreate")
    set_desc = lib.cublasLtMatmulDescSetAttribute
    _set(set_desc, desc, DESC_TRANSA, ctypes.c_int32(transa))
    _set(set_desc, desc, DESC_TRANSB, ctypes.c_int32(transb))
    _set(set_desc, desc, DESC_EPILOGUE, ctypes.c_uint32(epilogue))
    if a_type in FP8_TYPES:
        _set(set_desc, desc, DESC_FAST_ACCUM, ctypes.c_int8(fast_accum))
    # the heuristic reads the bias and aux pointers' values for their alignment
    if epilogue in NEEDS_BIAS:
        _set(set_desc, desc, DESC_BIAS_DATA_TYPE, ctypes.c_int32(bias_type))
        _set(set_desc, desc, DESC_BIAS_POINTER, ctypes.c_void_p(bias_ptr))
    if epilogue in NEEDS_AUX:                  # aux (pre-GELU) is bf16 (D's type), laid out as D
        _set(set_desc, desc, DESC_EPILOGUE_AUX_LD, ctypes.c_int64(ldd))
        _set(set_desc, desc, DESC_EPILOGUE_AUX_POINTER, ctypes.c_void_p(aux_ptr))
    layouts = []
    for dtype, rows, cols, ld in [(a_type, *((k, m) if transa == OP_T else (m, k)), lda),
                                  (b_type, *((n, k) if transb == OP_T else (k, n)), ldb),
                                  (CUDA_R_16BF, m, n, ldd)]:
        layout = ctypes.c_void_p()
        _check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), dtype, rows, cols, ld),
               "cublasLtMatrixLayoutCreate")
        layouts.append(layout)
    layout_a, layout_b, layout_d = layouts
    pref = ctypes.c_void_p()
    _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "cublasLtMatmulPreferenceCreate")
    set_pref = lib.cublasLtMatmulPreferenceSetAttribute
    _set(set_pref, pref, PREF_MAX_WORKSPACE_BYTES, ctypes.c_uint64(WORKSPACE_BYTES))
    _set(set_pref, pref, PREF_REDUCTION_SCHEME_MASK, ctypes.c_uint32(schemes))
    for attr, align in [(PREF_MIN_ALIGNMENT_A_BYTES, align_a),
                        (PREF_MIN_ALIGNMENT_B_BYTES, align_b),
                        (PREF_MIN_ALIGNMENT_C_BYTES, align_d),
                        (PREF_MIN_ALIGNMENT_D_BYTES, align_d)]:
        _set(set_pref, pref, attr, ctypes.c_uint32(align))
    results, count = (HeuristicResult * (choice + 1))(), ctypes.c_int(0)
    status = lib.cublasLtMatmulAlgoGetHeuristic(handle, desc, layout_a, layout_b, layout_d,
                                                layout_d, pref, choice + 1, results,
                                                ctypes.byref(count))
    lib.cublasLtMatmulPreferenceDestroy(pref)
    result = results[choice]
    if status != 0 or count.value <= choice or result.state != 0:
        for layout in layouts:
            lib.cublasLtMatrixLayoutDestroy(layout)
        lib.cublasLtMatmulDescDestroy(desc)
        _check(status, "cublasLtMatmulAlgoGetHeuristic")
        raise RuntimeError(f"cuBLASLt has no algorithm {choice} for m={m} n={n} k={k} "
                           f"epilogue={epilogue} alignments A/B/D {align_a}/{align_b}/{align_d}")
    plan = _plans[key] = (desc, layout_a, layout_b, layout_d, result.algo)
    return plan


def matmul(transa, transb, m, n, k, A, lda, B, ldb, D, ldd, epilogue=EPILOGUE_DEFAULT,
           bias=None, aux=None, accumulate=False, choice=0, fp8=None, fast_accum=False):
    """D (m, n) = epilogue(op(A) op(B)), or with accumulate D += op(A) op(B), column-major; A, B,
    D and aux bf16. bias (bf16 or fp32): read by EPILOGUE_BIAS and GELU_AUX_BIAS (m), written
    by BGRADB (n) and DGELU_BGRAD (m). aux, laid out as D (leading dimension ldd): written by
    GELU_AUX(_BIAS) with the pre-GELU values, read by DGELU(_BGRAD). choice: which of the
    heuristic's algorithms, best first (dev/cuda/matmul.py times the others).
    fp8 = (a_type, a_scale, b_type, b_scale): A and B are FP8 bytes (uint8 arrays) of those
    cudaDataTypes, and the product is multiplied by the device fp32 scalars a_scale and b_scale;
    fast_accum: see DESC_FAST_ACCUM. Runs on CuPy's current stream."""
    assert (bias is not None) == (epilogue in NEEDS_BIAS), "bias exactly when the epilogue has one"
    assert (aux is not None) == (epilogue in NEEDS_AUX), "aux exactly when the epilogue uses one"
    a_type, a_scale, b_type, b_scale = fp8 or (CUDA_R_16BF, None, CUDA_R_16BF, None)
    if fp8:
        assert {a_type, b_type} <= FP8_TYPES and (a_type, b_type) != (CUDA_R_8F_E5M2,) * 2
        assert (transa, transb) == (OP_T, OP_N) and m % 16 == n % 16 == k % 16 == 0, \
            "cuBLASLt's FP8 takes K-major operands, sizes multiples of 16"
    a, b, d = A.data.ptr, B.data.ptr, D.data.ptr
    bias_ptr = bias.data.ptr if bias is not None else 0
    aux_ptr = aux.data.ptr if aux is not None else 0
    bias_type = _BIAS_TYPES[bias.dtype] if bias is not None else None
    key = (transa, transb, m, n, k, lda, ldb, ldd, epilogue, bias_type, choice, REDUCTION_SCHEMES,
           _alignment(a), _alignment(b), _alignment(d), _alignment(bias_ptr), _alignment(aux_ptr),
           a_type, b_type, bool(fast_accum))
    desc, layout_a, layout_b, layout_d, algo = _plans.get(key) or _plan(key, bias_ptr, aux_ptr)
    lib, (handle, ws) = _lib(), _context()
    # the pointers differ from layer to layer; cublasLtMatmul reads them from the descriptor
    if bias is not None:
        _set(lib.cublasLtMatmulDescSetAttribute, desc, DESC_BIAS_POINTER, ctypes.c_void_p(bias_ptr))
    if aux is not None:
        _set(lib.cublasLtMatmulDescSetAttribute, desc, DESC_EPILOGUE_AUX_POINTER,
             ctypes.c_void_p(aux_ptr))
    if fp8:
        _set(lib.cublasLtMatmulDescSetAttribute, desc, DESC_A_SCALE_POINTER,
             ctypes.c_void_p(a_scale.data.ptr))
        _set(lib.cublasLtMatmulDescSetAttribute, desc, DESC_B_SCALE_POINTER,
             ctypes.c_void_p(b_scale.data.ptr))
    beta = _BETA_ACCUMULATE if accumulate else _BETA
    _check(lib.cublasLtMatmul(handle, desc, ctypes.byref(_ALPHA), a, layout_a, b, layout_b,
                              ctypes.byref(beta), d, layout_d, d, layout_d, ctypes.byref(algo),
                              ws, WORKSPACE_BYTES, cp.cuda.get_current_stream().ptr),
           "cublasLtMatmul")
