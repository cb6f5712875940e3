from llmpy.config import from_descriptor
from llmpy.mfu import flops_per_token, mfu, peak_flops


def test_d12_costs_about_0_8_gflop_per_token_at_t1024():
    # 6 * 124,475,904 + 6 * 12 * 768 * 1024
    assert flops_per_token(from_descriptor("d12"), 1024) == 803_478_528


def test_h200_has_the_h100_sxm_peak_and_pcie_its_own():
    assert peak_flops("NVIDIA H200") == peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12


def test_unknown_gpu_has_no_mfu():
    assert mfu(from_descriptor("d12"), 1024, 65536, 0.1, "Some Future GPU") is None


def test_mfu_is_achieved_over_peak():
    cfg = from_descriptor("d12")
    tokens, seconds = 524288, 1.0
    expected = flops_per_token(cfg, 1024) * tokens / seconds / 989.4e12
    assert mfu(cfg, 1024, tokens, seconds, "NVIDIA H200") == expected
