"""Ray's token for a local cluster, written private before Ray writes it (`python -m app.local_ray_token`; and
`training.power.local_ray` before it starts a Ray of its own).

With token authentication on (Ray's default for a new local cluster, unless RAY_AUTH_MODE says otherwise), Ray
writes `~/.ray/auth_token` itself when a new local cluster starts, with the mode the umask gives (0644 on most
machines: every local user could read it, and with it run code on the cluster). `prepare` writes it first, mode
0600, where Ray reads it (`RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`), and makes an existing one private;
nothing when `RAY_AUTH_TOKEN` holds the token, `RAY_AUTH_MODE` is another mode, or `RAY_ADDRESS` names a cluster to
join (its token is that cluster's). The token itself is never shown.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from core.private_file import write_private


def ray_token_path(environ: Mapping[str, str]) -> Path | None:
    """Where Ray reads a new local cluster's token from, or None when `prepare` leaves it alone (see the module)."""
    mode = environ.get("RAY_AUTH_MODE", "").strip().lower() or "token"
    joins = environ.get("RAY_ADDRESS", "local").strip() not in ("", "local")
    if mode != "token" or joins or environ.get("RAY_AUTH_TOKEN", "").strip():
        return None
    return Path(environ["RAY_AUTH_TOKEN_PATH"]) if environ.get("RAY_AUTH_TOKEN_PATH") else (
        Path.home() / ".ray" / "auth_token")


def prepare(environ: Mapping[str, str] = os.environ) -> str | None:
    """Write, or make private, the token file Ray will read; a line to show (never the token), None when none.

    Raises:
        OSError: the file cannot be written, read or made private.
    """
    path = ray_token_path(environ)
    if path is None:
        return None
    if path.is_file() and path.stat().st_size == 0:  # no token (a write cut short before files were written whole)
        path.unlink()
    if write_private(path, secrets.token_hex(32)):  # Ray's own form: 256 bits in hex, no line break
        return f"Ray token: generated {path} (mode 0600); the ray and serve CLI send it with RAY_AUTH_MODE=token"
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
        return f"Ray token: {path} was readable by others, who could run code on the cluster: made private (0600)"
    return f"Ray token: {path}; the ray and serve CLI send it with RAY_AUTH_MODE=token"
