"""Ray's token for the local cluster of `make run`: `python -m app.local_ray_token`.

With token authentication on, Ray writes `~/.ray/auth_token` itself when a new local cluster starts, with the mode
the umask gives (0644 on most machines: every local user could read it, and with it run code on the cluster). This
writes it first, mode 0600, where Ray reads it (`RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`), unless
`RAY_AUTH_TOKEN` holds the token or `RAY_AUTH_MODE` is not `token`; it warns of an existing file others can read.
It never prints the token.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from app.local_token import ensure_token


def ray_token_path(environ: Mapping[str, str]) -> Path | None:
    """Where Ray reads its token from a file, or None when it does not (token auth off, or the token in env)."""
    if environ.get("RAY_AUTH_MODE", "").strip().lower() != "token" or environ.get("RAY_AUTH_TOKEN", "").strip():
        return None
    return Path(environ.get("RAY_AUTH_TOKEN_PATH", "").strip() or Path.home() / ".ray" / "auth_token").expanduser()


def main(environ: Mapping[str, str] = os.environ) -> int:
    path = ray_token_path(environ)
    if path is None:
        return 0
    try:
        created = ensure_token(path, secrets.token_hex(32))  # Ray's own form: 256 bits in hex, no line break
        private = not path.stat().st_mode & 0o077
    except OSError as exc:
        sys.stderr.write(f"local_ray_token: error: {path} cannot be written or read "
                         f"({exc.strerror or type(exc).__name__})\n")
        return 2
    sys.stderr.write(f"Ray token: {'generated ' if created else ''}{path}"
                     f"{' (mode 0600)' if created else ''}; the ray and serve CLI send it with RAY_AUTH_MODE=token\n")
    if not private:
        sys.stderr.write(f"Ray token: warning: {path} is readable by others, who could run code on the cluster; "
                         f"chmod 600 it\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
