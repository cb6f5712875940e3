"""Choosing the ops module that the model runs on: llmpy.cpu (NumPy) or llmpy.cuda (CuPy)."""
from llmpy import LlmpyError, cpu


def load(device):
    """device: "cpu", "cuda" or "auto" (cuda where CuPy sees a GPU, else cpu)."""
    if device == "cpu":
        return cpu
    try:
        from llmpy import cuda
        reason = cuda.unavailable_reason()
    except ImportError as e:
        cuda, reason = None, f"the CUDA backend cannot be imported ({e})"
    if reason is None:
        return cuda
    if device == "cuda":
        raise LlmpyError(f"--device cuda: {reason}")
    return cpu
