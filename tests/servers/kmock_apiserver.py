"""A stand-in Kubernetes API server for tests: kmock's `KubernetesEmulator` on 127.0.0.1.

This is kmock (PyPI, pure Python on aiohttp), NOT a real kube-apiserver: none is installable on this machine
(see the project's shared components notes, section 3). It keeps objects in memory, serves get/list/watch/
create/patch/delete for any group/version/plural path (custom resources need no CRD) and records every
request, so tests can assert on the method, path, headers and body that a client sent.

What it does not check: authentication and RBAC (every request is allowed), schema validation, defaulting and
admission, resourceVersion conflicts, and strategic-merge semantics (a dict patch is a plain recursive merge
whatever its content type; a list body is applied as a JSON patch, `test` operations included, and a failed
`test` answers 500 where Kubernetes answers 422). Subresources such as `/scale` read and patch the parent
object itself, not an autoscaling/v1 Scale. A reaction that answers a write with an error (`emulator[...] <<
403`) does not stop the emulator from storing the write. No controller runs.
Treat it as an HTTP-level contract test of the client code.

The server runs on its own event loop in a daemon thread because the official `kubernetes` client is
synchronous; leaving the `with` block stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import kmock

KUBECONFIG_TEMPLATE = """\
apiVersion: v1
kind: Config
clusters:
  - name: kmock
    cluster: {{server: "{url}"}}
users:
  - name: tester
    user: {{token: kmock-token}}
contexts:
  - name: kmock
    context: {{cluster: kmock, user: tester, namespace: default}}
current-context: kmock
"""


@contextmanager
def kmock_apiserver(host: str = "127.0.0.1", port: int = 0,
                    start_timeout_s: float = 15) -> Iterator[tuple[str, kmock.KubernetesEmulator]]:
    """Run a kmock API server (a free port unless `port` is given); yields (base url, emulator)."""
    started = threading.Event()
    state: dict = {}

    async def serve() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with kmock.KubernetesEmulator() as emulator, \
                    kmock.Server(emulator, host=host, port=port or None) as server:
                state["url"], state["emulator"] = str(server.url).rstrip("/"), emulator
                started.set()
                await state["stop"].wait()
        except Exception as error:  # reported by the caller when the server never came up
            state["error"] = error
        finally:
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="kmock-apiserver", daemon=True)
    thread.start()
    if not started.wait(start_timeout_s) or "url" not in state:
        raise RuntimeError(f"kmock API server did not start on {host}:{port}: {state.get('error', 'timed out')!r}")
    try:
        yield state["url"], state["emulator"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(timeout=10)
