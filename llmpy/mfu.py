"""Model FLOPs utilization, as llm.c reports it: achieved FLOP/s over the GPU's dense bf16 peak."""
from llmpy.config import num_parameters

# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets;
# matched against the device name in order, so the more specific names come first
PEAK_BF16_TFLOPS = (
    ("H200", 989.4),          # same tensor cores as the H100 SXM, more and faster memory
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),          # SXM
    ("GH200", 989.4),
    ("A100", 312.0),
    ("A10G", 70.0),           # before "A10": first match wins
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


def flops_per_token(cfg, T):
    """Training FLOPs per token (PaLM's appendix B with the backward at 2x the forward, as
    llm.c): 6 per parameter, plus attention's 6 L C T for the scores and their weighted sum."""
    return 6 * num_parameters(cfg) + 6 * cfg.num_layers * cfg.channels * T


def peak_flops(device_name):
    """Dense bf16 peak in FLOP/s for a device name, or None for a GPU not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def mfu(cfg, T, tokens, seconds, device_name):
    """Fraction of peak, or None where the peak is unknown (printed as n/a, never negative)."""
    peak = peak_flops(device_name)
    if peak is None or seconds <= 0:
        return None
    return flops_per_token(cfg, T) * tokens / seconds / peak
