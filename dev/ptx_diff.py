"""Whether a kernel change changes the code: nvcc's PTX of kernels/ at a git revision against the
working tree, kernel by kernel, for every architecture CI builds. For refactors that must not
change what runs (a helper moved into a header, a loop bound written another way), checked on a
machine without a GPU; what differs is then the one place to read before the GPU round.

    python dev/ptx_diff.py HEAD                                  # every kernels/*.cu
    python dev/ptx_diff.py 734b78f kernels/flash_attention.cu --arch sm_90a

Both sides are compiled with the working tree's options and knobs (llmpy/kernel_options.py,
launch_config.KNOBS). Before comparing, register numbers and counts are dropped (one more
temporary renumbers every later one) and integer comparisons are written in one operand order (`b > a` as `a < b`).
Per kernel it prints `same`, or `differs` with the first changed lines (-v: all of them); the exit
status is 1 when any kernel differs. Needs nvcc on PATH."""
import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmpy.kernel_options import CI_TARGETS, OPTIONS, arch_option, builds_for, defines

ROOT = Path(__file__).resolve().parents[1]
_MIRROR = {"gt": "lt", "ge": "le"}
_SETP = re.compile(r"(\s*setp\.)(gt|ge)(\.[su]\d+\s+%p\d+), (\S+), (\S+);")
_ENTRY = re.compile(r"^\.(?:visible )?\.entry (\w+)", re.M)


def canonical(line):
    """line with `setp.gt/ge p, a, b` written `setp.lt/le p, b, a`, and register numbers (and the
    counts that declare them) dropped."""
    m = _SETP.fullmatch(line)
    if m:
        line = f"{m[1]}{_MIRROR[m[2]]}{m[3]}, {m[5]}, {m[4]};"
    return re.sub(r"%(rd|rs|r|p|f|fd)(\d+|<\d+>)", r"%\1", line)


def kernels(ptx):
    """{kernel name: its canonical lines} of a PTX text."""
    starts = [(m.start(), m[1]) for m in _ENTRY.finditer(ptx)]
    ends = [s for s, _ in starts[1:]] + [len(ptx)]
    return {name: [canonical(x) for x in ptx[start:end].splitlines()]
            for (start, name), end in zip(starts, ends)}


def compare(old_ptx, new_ptx):
    """[(kernel, changed lines as a unified diff, [] where the same)], old's kernels first."""
    old, new = kernels(old_ptx), kernels(new_ptx)
    names = list(old) + [n for n in new if n not in old]
    return [(n, list(difflib.unified_diff(old.get(n, []), new.get(n, []), "old", "new", lineterm="", n=1)))
            for n in names]


def ptx(source, arch, out_dir):
    """nvcc's PTX of source (its headers from its own folder) with the runtime's options."""
    options = [o for o in OPTIONS if not o.startswith("-I")]
    out = Path(out_dir) / f"{source.stem}-{arch}.ptx"
    result = subprocess.run(["nvcc", "-ptx", arch_option(arch), *options, f"-I{source.parent}",
                             *defines(source.stem), str(source), "-o", str(out)],
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: nvcc could not compile {source} for {arch}: {result.stderr.strip()}")
    return out.read_text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("sources", nargs="*", type=Path, help="kernels/*.cu files (default: all)")
    parser.add_argument("--arch", nargs="+", default=CI_TARGETS, help="targets (default: CI's)")
    parser.add_argument("-v", action="store_true", help="every changed line, not the first 12")
    args = parser.parse_args()
    if shutil.which("nvcc") is None:
        sys.exit("error: nvcc not found on PATH")
    sources = [s.resolve() for s in args.sources] or sorted((ROOT / "kernels").glob("*.cu"))
    differs = False
    with tempfile.TemporaryDirectory() as old_root, tempfile.TemporaryDirectory() as out_dir:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "kernels"], capture_output=True)
        if archive.returncode:
            sys.exit(f"error: git archive {args.rev}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", old_root], input=archive.stdout, check=True)
        old_dir = Path(old_root) / "kernels"
        (Path(out_dir) / "old").mkdir()
        for source in sources:
            for arch in args.arch:
                if not builds_for(source.stem, arch):
                    continue
                old_source = old_dir / source.name
                if not old_source.exists():
                    print(f"{source.name} {arch}: new at the working tree")
                    continue
                old_ptx = ptx(old_source, arch, Path(out_dir) / "old")
                for kernel, diff in compare(old_ptx, ptx(source, arch, out_dir)):
                    print(f"{source.name} {arch} {kernel}: {'differs' if diff else 'same'}")
                    differs |= bool(diff)
                    for line in diff[2:] if args.v else diff[2:14]:
                        print(f"    {line}")
    sys.exit(1 if differs else 0)


if __name__ == "__main__":
    main()
