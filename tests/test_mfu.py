import train_gpt2
from llmpy import cpu
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


def test_mfu_is_achieved_flops_over_the_datasheet_peak():
    # llm.c's estimate written out with published numbers: d12 has 124,475,904 parameters
    # (llm.c prints it; V padded to 50304), 6 FLOPs per parameter and token plus 6 L C T for
    # attention; an H100 SXM (and the H200, the same tensor cores) peaks at 989.4 dense bf16 TFLOP/s
    tokens, seconds = 524288, 0.75
    flops = (6 * 124_475_904 + 6 * 12 * 768 * 1024) * tokens
    expected = flops / seconds / 989.4e12            # ~0.5677
    assert abs(mfu(from_descriptor("d12"), 1024, tokens, seconds, "NVIDIA H200") - expected) <= 1e-12


def test_mfu_on_an_a100_uses_its_312_tflops():
    tokens, seconds = 65536, 0.25
    expected = (6 * 124_475_904 + 6 * 12 * 768 * 1024) * tokens / seconds / 312e12
    assert abs(mfu(from_descriptor("d12"), 1024, tokens, seconds, "NVIDIA A100-SXM4-80GB") - expected) <= 1e-12


class GPU:
    """What the step line's MFU column asks of a backend: whether it reports MFU, and its name."""
    reports_mfu = True

    def __init__(self, name):
        self.name = name

    def device_name(self):
        return self.name


def test_the_step_lines_mfu_column_is_llm_c_s_percentage_on_a_gpu_n_a_on_an_unknown_one_none_on_the_cpu():
    d12, tokens, seconds = from_descriptor("d12"), 524288, 0.75     # 56.77% on an H200 (above)
    assert train_gpt2.mfu_column(d12, 1024, tokens, seconds, GPU("NVIDIA H200")) == " | 56.8% bf16 MFU"
    assert train_gpt2.mfu_column(d12, 1024, tokens, seconds, GPU("Some Future GPU")) == " | n/a MFU"
    assert train_gpt2.mfu_column(d12, 1024, tokens, seconds, cpu) == ""
