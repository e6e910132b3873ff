"""Ray's token for the local cluster of `make run`, `train`, `evaluate` and the image: `python -m
app.local_ray_token` writes it private before Ray would write it readable by others (core/ray_token.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from core.ray_token import prepare, ray_token_path


def main(environ: Mapping[str, str] = os.environ) -> int:
    try:
        line = prepare(environ)
    except OSError as exc:
        sys.stderr.write(f"local_ray_token: error: {ray_token_path(environ)} cannot be written or read "
                         f"({exc.strerror or type(exc).__name__})\n")
        return 2
    if line:
        sys.stderr.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
