"""dev/ptx_diff.py: a kernel change that leaves the code alone reads `same`; one that changes an
instruction reads `differs`, naming the kernel. The comparison itself on PTX text written here;
the whole script through nvcc where nvcc is present."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dev.ptx_diff import canonical, compare

ROOT = Path(__file__).resolve().parents[1]

PTX = """
.visible .entry first(
{
\t.reg .b32 \t%r<{n}>;
\tadd.s32 \t%r{a}, %r1, %r2;
\tsetp.lt.s32 \t%p1, %r{a}, %r3;
\tret;
}
.visible .entry second(
{
\tmul.lo.s32 \t%r4, %r1, 8;
\tret;
}
"""


def ptx(n=5, a=4):
    """PTX of two kernels; n and a renumber registers without changing the code."""
    return PTX.replace("{n}", str(n)).replace("{a}", str(a))


def changed(old, new):
    return [kernel for kernel, diff in compare(old, new) if diff]


def test_registers_numbered_otherwise_compare_the_same():
    assert changed(ptx(n=5, a=4), ptx(n=9, a=7)) == []


def test_a_comparison_with_its_operands_the_other_way_round_is_the_same():
    assert canonical("\tsetp.gt.s32 \t%p1, %r3, %r4;") == canonical("\tsetp.lt.s32 \t%p7, %r4, %r3;")
    assert canonical("\tsetp.ge.u32 \t%p1, %r3, 511;") == canonical("\tsetp.le.u32 \t%p1, 511, %r3;")
    flipped = ptx().replace("setp.lt.s32 \t%p1, %r4, %r3;", "setp.gt.s32 \t%p1, %r3, %r4;")
    assert flipped != ptx() and changed(ptx(), flipped) == []


def test_a_comparison_of_another_kind_differs():
    assert changed(ptx(), ptx().replace("setp.lt.s32", "setp.le.s32")) == ["first"]


def test_a_changed_instruction_differs_in_its_kernel_only():
    assert changed(ptx(), ptx().replace("mul.lo.s32 \t%r4, %r1, 8", "mul.lo.s32 \t%r4, %r1, 9")) == ["second"]


def test_a_kernel_added_or_removed_differs():
    one = ptx()[:ptx().index(".visible .entry second")]
    assert changed(one, ptx()) == ["second"]
    assert changed(ptx(), one) == ["second"]


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "dev" / "ptx_diff.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@needs_nvcc
def test_an_unchanged_kernel_reads_same_and_exits_0():
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "kernels/residual.cu", "kernels/common.cuh"],
                      cwd=ROOT).returncode:
        pytest.skip("kernels/residual.cu or common.cuh has uncommitted changes")
    result = run_script("HEAD", "kernels/residual.cu", "--arch", "sm_80")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "residual.cu sm_80 residual_forward: same\n"


@needs_nvcc
def test_a_changed_kernel_reads_differs_and_exits_1(tmp_path):
    shutil.copy(ROOT / "kernels" / "common.cuh", tmp_path)
    source = (ROOT / "kernels" / "residual.cu").read_text()
    assert "to_float(x[k]) + to_float(y[k])" in source
    (tmp_path / "residual.cu").write_text(source.replace("to_float(x[k]) + to_float(y[k])",
                                                         "to_float(x[k]) - to_float(y[k])"))
    result = run_script("HEAD", str(tmp_path / "residual.cu"), "--arch", "sm_80")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("residual.cu sm_80 residual_forward: differs\n")
    assert "sub.f32" in result.stdout
