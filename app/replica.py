"""The Serve replica a request runs in, as a FastAPI dependency.

Route functions declare `replica: Annotated[SomeDeployment, Depends(serving_replica)]`; Serve's own
class-based views reach their instance the same way (`make_fastapi_class_based_view` in
ray/serve/_private/http_util.py), so routes can live outside the deployment class.
"""

from __future__ import annotations

from typing import Any

from ray import serve


async def serving_replica() -> Any:
    """The deployment instance of the replica answering this request."""
    return serve.get_replica_context().servable_object
