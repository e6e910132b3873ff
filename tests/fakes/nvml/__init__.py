"""Build the fake libnvidia-ml.so.1 from fake_nvml.c with gcc (provenance in README.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"


def build_fake_nvml(out_dir: Path) -> Path:
    """Compile the fake NVML library into `out_dir`; return the path of the .so.

    Raises:
        RuntimeError: gcc is missing or the compile failed (with gcc's message).
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found; install it (apt-get install gcc) to build the fake NVML library")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY_NAME
    done = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(target), str(SOURCE)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building {target} failed: {done.stderr.strip()}")
    return target
