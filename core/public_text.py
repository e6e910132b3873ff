"""Text that anyone who can read the API may see: internal addresses, absolute paths and tracebacks cut out.

Operators keep the full text in the logs; records and events the API serves carry this form (DESIGN: no body
carries a path or an internal address).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^\s@/]*@)?[^\s,;)'\"]+", re.IGNORECASE)  # a login's up to its @
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")
_H = r"[0-9a-f]{1,4}"
_IPV6 = re.compile(  # full form, or compressed (with "::"); a bracketed one keeps its port with it
    rf"\[?(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?)(?![\w:])"
    r"(?:\]:\d+|\])?",
    re.IGNORECASE)
_HOST_ARGUMENT = re.compile(r"\b(host|port)=('[^']*'|\"[^\"]*\"|[^\s,)]+)")  # urllib3: host='name', port=6443
_NAME_AND_PORT = re.compile(  # a dotted host name with a letter in its last label, a one-label name with a hyphen
    r"(?<![\w.-])(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z0-9-]*[a-z][a-z0-9-]*|[a-z0-9]+-[a-z0-9-]+|localhost)"
    r":\d{1,5}(?![\w:])"
    r"|(?<![\w.-])[a-z][a-z0-9]*:\d{2,5}(?![\w:]|\.\w)",  # a one-label service name with a port: influxdb:8086
    re.IGNORECASE)
_QUOTED_HOST = re.compile(  # urllib3's words around a bare host name
    r"(Failed to resolve |Connection to |connect to host |Name or service not known: )('[^']+'|\S+)", re.IGNORECASE)
_CLUSTER_NAME = re.compile(  # a bare in-cluster or private DNS name: service.namespace.svc(.cluster.local), x.internal
    r"(?<![\w.-])(?:[a-z0-9-]+\.)+(?:svc(?:\.cluster\.local)?|cluster\.local|internal)(?![\w-]|\.\w)",
    re.IGNORECASE)
_LOGIN_LEFT = re.compile(r"\S+@<address>")  # what a URL's match left of a login (a password with a `;` or `,`)
_LONG_TOKEN = re.compile(r"\S{300,}")  # nothing that long without a space is worth showing, and several
# patterns above take time quadratic in a token's length
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+([\w.-]*)")
_TRACEBACK_LINE = re.compile(r'^\s*(?:Traceback \(most recent call last\):|File "[^"]*", line \d+.*)$')


def _without_tracebacks(text: str) -> str:
    lines, kept, frame = text.splitlines(), [], False
    for line in lines:
        if _TRACEBACK_LINE.match(line):
            frame = line.lstrip().startswith("File ")
            continue
        if frame and line.startswith("    "):  # the source line a frame quotes
            frame = False
            continue
        frame = False
        kept.append(line)
    return "\n".join(kept)


def without_addresses(text: str) -> str:
    """`text` with every URL, IPv4 or IPv6 address, `host=`/`port=` argument, `name:port`, host name urllib3
    quotes ("Failed to resolve 'name'", "Connection to name timed out") and in-cluster or private DNS name
    (`influxdb.kcloud.svc`, `db.internal`) replaced by <address>,
    every absolute path cut to its last part (.../name), traceback frames left out and any run of 300 or more
    characters without a space replaced by <long text>."""
    text = _LONG_TOKEN.sub("<long text>", _without_tracebacks(text))
    text = _URL.sub("<address>", text)
    text = _HOST_ARGUMENT.sub(lambda match: f"{match.group(1)}=<address>", text)
    text = _QUOTED_HOST.sub(lambda match: f"{match.group(1)}<address>", text)
    text = _IPV4.sub("<address>", text)
    text = _IPV6.sub("<address>", text)
    text = _NAME_AND_PORT.sub("<address>", text)
    text = _CLUSTER_NAME.sub("<address>", text)
    text = _LOGIN_LEFT.sub("<address>", text)
    return _ABSOLUTE_PATH.sub(lambda match: f".../{match.group(1)}", text)


def error_text(error: BaseException) -> str:
    """`Type: message` of an error for events and records: a Ray task error reads as the error it wraps (its own
    text is a remote traceback), and only the message's first line is kept; the log keeps the rest."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    if isinstance(error, ValidationError):  # its first line names only the model: say the field and the reason
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"ValidationError: {where + ': ' if where else ''}{first['msg']}"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
