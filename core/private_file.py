"""A file only its owner may read, created once: tokens the service generates for itself."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> bool:
    """Write `text` into a new file `path` (mode 0600, its folder created) unless it exists; True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return True
