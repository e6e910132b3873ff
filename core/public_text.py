"""Text that anyone who can read the API may see: internal addresses and absolute paths cut out.

Operators keep the full text in the logs; records and events the API serves carry this form (DESIGN: no body
carries a path or an internal address).
"""

from __future__ import annotations

import re

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,;)'\"]+", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+([\w.-]*)")


def without_addresses(text: str) -> str:
    """`text` with every URL and IPv4 address (with its port) replaced by <address>, and every absolute path cut to
    its last part (.../name)."""
    text = _URL.sub("<address>", text)
    text = _IPV4.sub("<address>", text)
    return _ABSOLUTE_PATH.sub(lambda match: f".../{match.group(1)}", text)
