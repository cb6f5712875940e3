"""How our kernels are launched: block sizes, and the shared memory each asks for (dynamic, in
bytes) at given shapes and the device's limits, beside what each GPU generation allows a block.
The launchers in llmpy/cuda take their numbers from here; this module needs no CuPy, so the CPU
tests check every request at d12 and d48 against every generation's limits, with each kernel's
static shared memory as ptxas reports it (model_requests).

A block may take static + dynamic <= 48 KB as it is; up to `per_block` (the device's opt-in
limit) once its kernel's dynamic limit is raised, which llmpy.cuda.runtime.launch() does."""
from dataclasses import dataclass, replace

DEFAULT = 48 * 1024
KB = 1024

# Compile-time knobs of our kernels, owned here: NVRTC (and CI's nvcc) gets them as -D values
# (kernel_options.defines), the .cu files refuse to build without them and static_assert what they
# require, and the launchers below size their grids and shared memory from the same numbers.
KNOBS = {
    "layernorm": {"BACKWARD_THREADS": 512, "SUMS_THREADS": 384},   # the backwards' launch bounds
    "matmul": {"BIAS_WARPS": 8},
    # the wgmma attention: K/V stages of the forward, Q/dO stages of the dK/dV kernel, warpgroups
    # (query tiles) a block and stages of the dQ kernel
    "flash_attention_wgmma": {"FWD_STAGES": 3, "BWD_STAGES": 3, "DQ_WGS": 2, "DQ_STAGES": 4},
    # the FP8 cast-transpose: a TILE_ROWS x TILE_COLS tile a block of TILE_THREADS threads
    "fp8": {"TILE_ROWS": 128, "TILE_COLS": 64, "TILE_THREADS": 256},
}


@dataclass(frozen=True)
class Limits:
    per_block: int            # static + dynamic a block may opt in to (sharedMemPerBlockOptin)
    per_sm: int               # (sharedMemPerMultiprocessor)
    reserved: int = KB        # per resident block, taken by the system (reservedSharedMemPerBlock)

    def capped(self, kb):
        """These limits, at most `kb` KB a block (LLMPY_MAX_SHARED_KB: an H200 standing in for a
        GPU with less shared memory, e.g. 99 for an RTX 4090 or L4, 163 for an A100)."""
        per_block = min(self.per_block, kb * KB)
        return replace(self, per_block=per_block, per_sm=min(self.per_sm, per_block + self.reserved))


# the CUDA programming guide's table of compute capabilities
AMPERE_A100 = Limits(163 * KB, 164 * KB)        # sm_80
CONSUMER = Limits(99 * KB, 100 * KB)            # sm_86, sm_89, sm_120: A10, L4, L40S, RTX 30/40/50
HOPPER = Limits(227 * KB, 228 * KB)             # sm_90, sm_100: H100, H200, B200
GENERATIONS = {"sm_80": AMPERE_A100, "sm_86": CONSUMER, "sm_89": CONSUMER, "sm_90a": HOPPER,
               "sm_100": HOPPER, "sm_120": CONSUMER}

PACKET = 16       # bytes: 8 bf16, the unit in which kernels move rows


def classifier_row_packets(limits, static):
    """How many 16-byte packets of a logits row kernels/classifier.cu may keep in shared memory:
    as many as let two blocks share an SM (H100/H200: 7,216 packets, GPT-2's 50,257 columns are
    6,283; 99 KB GPUs: 3,120, the rest of a row is read twice from global memory)."""
    two_per_sm = limits.per_sm // 2 - limits.reserved - static
    return max(0, min(two_per_sm, limits.per_block - static)) // PACKET


CLASSIFIER_BLOCK = 512   # two blocks of 512 per SM, each holding a row (dev/cuda/classifier.py)

# kernels/layernorm.cu
LAYERNORM_FORWARD_BLOCK = 256
# backward, C <= ROWS_IN_REGISTERS_C (layernorm_backward in the .cu): blocks of BACKWARD_BLOCK
# threads; the kernel's launch bound (BACKWARD_THREADS) keeps it at <= 128 registers a thread, so
# an SM holds BACKWARD_THREADS threads: the grid is that many blocks an SM, one wave. Blocks of
# 128-512 threads time alike (dev/cuda/layernorm.py version 4, docs/performance.md)
BACKWARD_BLOCK, BACKWARD_THREADS = 256, KNOBS["layernorm"]["BACKWARD_THREADS"]
# layernorm_backward_sums (dinp's column sums too): 154 registers, so at most 384 threads an SM,
# in blocks of 128
SUMS_BLOCK, SUMS_THREADS = 128, KNOBS["layernorm"]["SUMS_THREADS"]
BIAS_WARPS = KNOBS["matmul"]["BIAS_WARPS"]
ROWS_IN_REGISTERS_C = 768
# backward for larger C (layernorm_backward_shared): blocks of at most this many threads (fewer
# where the device's shared memory is short), each over a fixed range of rows
SHARED_BACKWARD_BLOCK = 128

def residual_layernorm_bytes(C, block):
    return block // 32 * C * 2                  # each warp's row of the residual, bf16


def layernorm_backward_bytes(C, block, parts):
    return block // 32 * parts * C * 4          # each warp's column sums (2 or 3 of C), fp32


def layernorm_backward_shared_bytes(C, block):
    return block // 32 * 2 * -(-C // 256) * 256 * 4   # each warp's dbias, dweight accumulators


def layernorm_backward_shared_block(C, block, limits, static):
    """The largest block of at most `block` threads (whole warps) whose accumulators fit."""
    warps = min(block // 32, (limits.per_block - static) // layernorm_backward_shared_bytes(C, 32))
    if warps < 1:
        raise ValueError(f"layernorm backward at C={C} needs more than {limits.per_block} bytes "
                         "of shared memory for one warp")
    return warps * 32


# kernels/flash_attention.cu (mma.sync) and flash_attention_wgmma.cu (Hopper)
HEAD_SIZE, TILE = 64, 64
TILE_BYTES = TILE * 72 * 2     # a bf16 tile, rows padded to 72 (STRIDE in flash_attention.cuh)
# dK/dV: the block's own two tiles, two double-buffered streamed ones, the streamed rows' lse and
# delta, twice, and dS's staging tile; dQ: two double-buffered tiles
DKDV_SMEM = 7 * TILE_BYTES + 4 * TILE * 4
DQ_SMEM = 4 * TILE_BYTES
WGMMA_ROWS, WGMMA_THREADS = 128, 256   # the wgmma forward: query rows and threads a block


WGMMA = KNOBS["flash_attention_wgmma"]


def wgmma_forward_smem(stages=WGMMA["FWD_STAGES"]):
    """Q, `stages` stages of a K and a V tile (128-byte rows), 1 KB to align them to 1024 bytes
    (FWD_STAGES in the .cu)."""
    return (WGMMA_ROWS + 2 * stages * TILE) * HEAD_SIZE * 2 + KB


def wgmma_dkdv_smem(stages=WGMMA["BWD_STAGES"]):
    """One warpgroup, 64 keys a block: K, V and the dS staging tile, `stages` stages of a Q and a
    dO tile with their rows' lse and delta, 1 KB to align the tiles (BWD_STAGES in the .cu)."""
    return (3 + 2 * stages) * TILE * HEAD_SIZE * 2 + stages * 2 * TILE * 4 + KB


# the wgmma dQ kernel: DQ_WGS warpgroups (query tiles) a block, DQ_STAGES stages of a K tile and a
# dS tile a warpgroup, 1 KB to align them
WGMMA_DQ_TILES = WGMMA["DQ_WGS"]
WGMMA_DQ_SMEM = WGMMA["DQ_STAGES"] * (WGMMA_DQ_TILES + 1) * TILE * HEAD_SIZE * 2 + KB


def model_requests(C, limits, static):
    """{(source, kernel): dynamic shared memory} of every kernel that the model launches with
    some, at channel count C, under `limits`; static(source, kernel): its static bytes."""
    requests = {
        ("classifier", "classifier_forward_backward"):
            classifier_row_packets(limits, static("classifier", "classifier_forward_backward")) * PACKET,
        ("layernorm", "residual_layernorm_forward"): residual_layernorm_bytes(C, LAYERNORM_FORWARD_BLOCK),
        ("flash_attention", "flash_attention_backward_dkdv"): DKDV_SMEM,
        ("flash_attention", "flash_attention_backward_dq"): DQ_SMEM,
        ("flash_attention_wgmma", "flash_attention_forward_wgmma"): wgmma_forward_smem(),
        ("flash_attention_wgmma", "flash_attention_backward_dkdv_wgmma"): wgmma_dkdv_smem(),
        ("flash_attention_wgmma", "flash_attention_backward_dq_wgmma"): WGMMA_DQ_SMEM,
    }
    if C <= ROWS_IN_REGISTERS_C:
        requests["layernorm", "layernorm_backward"] = layernorm_backward_bytes(C, BACKWARD_BLOCK, 2)
        requests["layernorm", "layernorm_backward_sums"] = layernorm_backward_bytes(C, SUMS_BLOCK, 3)
    else:
        kernel = ("layernorm", "layernorm_backward_shared")
        block = layernorm_backward_shared_block(C, SHARED_BACKWARD_BLOCK, limits, static(*kernel))
        requests[kernel] = layernorm_backward_shared_bytes(C, block)
    return requests
