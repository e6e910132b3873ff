"""Credential calls that may hang, each bounded in time.

The Kubernetes client runs a kubeconfig's exec plugin (`aws eks get-token`, `kubelogin`, ...) with no time limit: when
it loads the credentials, and again before a request once the plugin's token has expired. A plugin waiting for a login
would stall the controller's tick, and every policy's scaling with it. Each call here runs in a daemon thread for at
most `timeout_s`; while one that overran is still running, the next fails at once instead of starting another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from autoscaler.actuators.base import ActuationError

T = TypeVar("T")


class BoundedCredentialCalls:
    """Runs credential calls one at a time, each for at most `timeout_s`."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._one_at_a_time = threading.Lock()
        self._overrun: threading.Thread | None = None

    def __call__(self, call: Callable[[], T]) -> T:
        with self._one_at_a_time:
            if self._overrun is not None and self._overrun.is_alive():
                raise ActuationError(f"an earlier credential call is still running, past its {self.timeout_s:g} s; "
                                     "check the kubeconfig's exec plugin (is it waiting for a login?)")
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    outcome["value"] = call()
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    outcome["error"] = error

            thread = threading.Thread(target=run, name="kubernetes-credentials", daemon=True)
            thread.start()
            thread.join(self.timeout_s)
            if thread.is_alive():
                self._overrun = thread
                raise ActuationError(f"the credential call took longer than {self.timeout_s:g} s; check the "
                                     "kubeconfig's exec plugin (is it waiting for a login?)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
