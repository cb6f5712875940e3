"""Every GPT-2 op on the GPU: our CUDA kernels (kernels/*.cu, compiled by NVRTC) launched from
CuPy, cuBLAS for the matrix products. The same API as llmpy.cpu, so llmpy/gpt2.py runs on either;
the fused ops of llmpy/fused.py are kernels or cuBLASLt epilogues of their own here.

Precision as llm.c: bf16 params, activations and gradients; fp32 master weights, AdamW state,
LayerNorm statistics and losses; fp32 arithmetic inside every kernel.
"""
import sys

import cupy as cp
import ml_dtypes
import numpy as np

from llmpy import LlmpyError, backends, fused
from llmpy.fp8_linear import Fp8Linears
from llmpy.cuda.adamw import adamw_update, clip_factor, clip_scale, global_norm_squared  # noqa: F401
from llmpy.cuda.classifier import classifier_forward_backward  # noqa: F401
from llmpy.cuda.elementwise import gelu_backward, gelu_forward, residual_forward  # noqa: F401
from llmpy.cuda.flash_attention import (attention_backward, attention_backward_sums,  # noqa: F401
                                        attention_forward, attention_saved)
from llmpy.cuda.encoder import encoder_backward, encoder_forward  # noqa: F401
from llmpy.cuda.layernorm import (layernorm_backward, layernorm_backward_sums,  # noqa: F401
                                   layernorm_forward, residual_layernorm_forward)
from llmpy.cuda.matmul import bias_backward, matmul_backward, matmul_forward  # noqa: F401
# cuBLASLt's epilogues compute the tanh GELU of kernels/gelu.cu: with another activation there,
# drop this line (the fused ops then run the matmul and that kernel) or pick its epilogue
from llmpy.cuda.matmul import gelu_matmul_backward, matmul_gelu_forward  # noqa: F401
from llmpy.cuda import fp8 as fp8_kernels
from llmpy.cuda.runtime import SYNC, Graph

# the fused ops of llmpy/fused.py: each one imported above is our kernel or epilogue for it; any
# other runs as the composition of the primitives
fused.install(sys.modules[__name__])

capture = None if SYNC else Graph   # LLMPY_SYNC=1 runs eager: a synchronisation cannot be captured

xp = cp
param_dtype = ml_dtypes.bfloat16
act_dtype = ml_dtypes.bfloat16
name = "cuda"
master_weights = True       # bf16 params: AdamW keeps fp32 master weights
collectives = "nccl"        # device buffers reduced by NCCL
reports_mfu = True


def unavailable_reason():
    """None where a GPU can be used, else why not, in words a user can act on: a driver too old
    for the installed CuPy, a GPU older than Ampere."""
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as e:
        try:
            problem = backends.driver_problem(cp.cuda.runtime.driverGetVersion(), backends.cupy_build())
        except cp.cuda.runtime.CUDARuntimeError:
            problem = None
        return problem or f"no usable CUDA device ({e})"
    if count == 0:
        return "no CUDA device"
    return backends.capability_problem(device_name(), cp.cuda.Device().compute_capability)


def fp8_linears(cfg, params, B, T):
    """--fp8 1's ops for the model: this backend's, with the blocks' matmuls in FP8."""
    problem = backends.fp8_capability_problem(device_name(), cp.cuda.Device().compute_capability)
    if problem:
        raise LlmpyError(f"--fp8 1: {problem}")
    return Fp8Linears(sys.modules[__name__], fp8_kernels, cfg, params, B, T)


# what a CUDA fault raises, for train_gpt2.py to turn into one line (a kernel's fault surfaces at
# the next synchronisation, unless LLMPY_SYNC=1 stops at the kernel)
device_errors = (cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError)


def to_device(a):
    return cp.asarray(a)


def to_host(a):
    return cp.asnumpy(a)


def upload(dst, src):
    """dst (a device array) <- src (a host array of its shape): straight into dst, one copy,
    where dst is contiguous."""
    if dst.flags.c_contiguous:
        dst.set(np.ascontiguousarray(src, dtype=dst.dtype))
    else:
        dst[...] = cp.asarray(src)


def synchronize():
    cp.cuda.Device().synchronize()


def device_name():
    return cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()


def memory_in_use():
    """Bytes held by CuPy's memory pool: every buffer and workspace of ours lives there."""
    return cp.get_default_memory_pool().total_bytes()
