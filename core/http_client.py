"""HTTP GET/POST to the few APIs the service calls with urllib (Ray's dashboard, Prometheus): credentials stay off
other hosts and out of messages.

urllib follows redirects and copies every header to the new request, whatever its host: a dashboard behind an SSO
proxy, or an http -> https redirect, would hand the Ray token or a Basic login to another server. These APIs never
redirect, so a redirect is refused (an HTTPError with its 3xx status). A login in a URL (`scheme://user:pass@host`)
becomes a Basic Authorization header, which urllib would not make (it took `user:pass@host` for the host), and the
URL shown in logs and errors has none.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import Any, NoReturn


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> NoReturn:
        raise urllib.error.HTTPError(req.full_url, code, f"{msg}: redirects are not followed", headers, fp)


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def open_url(request: urllib.request.Request, timeout: float) -> HTTPResponse:
    """`urllib.request.urlopen` that follows no redirect (HTTPError with the 3xx status instead)."""
    return _OPENER.open(request, timeout=timeout)


def split_login(url: str) -> tuple[str, dict[str, str]]:
    """`scheme://user:password@host...` -> the URL without the login, and the Basic Authorization header it makes
    (a user alone, such as an API key, too); a URL without a login -> itself, no header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return bare, {"Authorization": f"Basic {base64.b64encode(login.encode()).decode()}"}
