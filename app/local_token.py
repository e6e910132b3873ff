"""The local API token of `make run`: `python -m app.local_token state/api-token [--url http://127.0.0.1:8002]`.

Creates the file with a random token (mode 0600) when there is none, reuses it afterwards, and says where it
is and how to use it, without ever printing the token itself.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from core.private_file import write_private


def ensure_token(path: Path) -> bool:
    """Write a new random token into `path` (mode 0600) unless it exists; True when it was created."""
    return write_private(path, secrets.token_urlsafe(32) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.local_token", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="the token file (created when missing)")
    parser.add_argument("--url", default="http://127.0.0.1:8002", help="the API, for the usage example")
    args = parser.parse_args(argv)
    path = args.path.resolve()
    try:
        created = ensure_token(path)
        problem = None if created or (path.is_file() and path.read_text().strip()) else (
            "is not a file" if not path.is_file() else "is empty: delete it and a new token is generated")
    except (FileExistsError, NotADirectoryError):  # mkdir of the folder, or a path through a file
        created, problem = False, "cannot be written: a folder on its path is a file"
    except OSError as exc:
        created, problem = False, f"cannot be written or read ({exc.strerror or type(exc).__name__})"
    if problem:
        sys.stderr.write(f"local_token: error: {path} {problem}\n")
        return 2
    if created:
        sys.stderr.write(
            f"API token: generated {path} (mode 0600); it is reused on the next runs. Writes need it, e.g.\n"
            f'  curl -H "Authorization: Bearer $(cat {path})" -H "Content-Type: application/json" \\\n'
            f"       -d '{{\"items\": [{{\"type\": \"cost\", \"request\": {{\"resources\": {{\"cpu_cores\": 4, "
            f"\"memory_gb\": 16}}, \"duration_hours\": 1}}}}]}}' {args.url}/api/v1/predict/batch\n")
    else:
        sys.stderr.write(f"API token: {path} (writes need 'Authorization: Bearer $(cat {path})')\n")
        if path.stat().st_mode & 0o077:
            sys.stderr.write(f"API token: warning: {path} is readable by others; chmod 600 it\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
