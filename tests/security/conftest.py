"""The security suite's apps over real Serve on 127.0.0.1: the session's app (token configured, tests/conftest.py)
and a second copy of the main application at /open with NO token configured."""

from __future__ import annotations

import httpx
import pytest

OPEN_APP, OPEN_PREFIX = "kcloud-open", "/open"


@pytest.fixture(scope="session")
def open_state(tmp_path_factory) -> str:
    """The state path of `open_api`'s app (its batch records)."""
    return str(tmp_path_factory.mktemp("open-state"))


@pytest.fixture(scope="session")
def open_api(api, app_args, serve_port, open_state):
    """ApiIngress + CostPredictor with no API token anywhere (args, API_TOKEN, API_TOKEN_FILE), its own state.

    Bound directly rather than through build_app: the bootstrap would reconcile the session's shared actors
    (the scaling controller) with this copy's different settings.
    """
    from ray import serve

    from app.ingress import ApiIngress
    from app.settings import AppArgs
    from core.names import COST_DEPLOYMENT, INGRESS_DEPLOYMENT
    from deployments.cost import CostPredictor

    no_token = {"env_vars": {"API_TOKEN": "", "API_TOKEN_FILE": ""}}  # empty counts as unset
    args = AppArgs.model_validate({
        **app_args, "api_token_file": None, "state_path": open_state,
        "ingress": {"ray_actor_options": {"num_cpus": 0.05, "runtime_env": no_token}},
    }).with_absolute_paths()
    cost = serve.deployment(CostPredictor, name=COST_DEPLOYMENT).options(
        ray_actor_options={"num_cpus": 0.05}).bind(args.model_path, args.cost_model_id)
    serve.run(serve.deployment(ApiIngress, name=INGRESS_DEPLOYMENT).options(**args.ingress.as_options()).bind(
        cost, args), name=OPEN_APP, route_prefix=OPEN_PREFIX)
    with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}{OPEN_PREFIX}", timeout=60) as client:
        yield client
    serve.delete(OPEN_APP)
