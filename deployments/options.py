"""Code-level deployment options (`AppArgs`, from Python callers); a Serve config sets them per deployment
under `applications[].deployments[]`, which Serve applies over these."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeploymentOptions(BaseModel):
    """The subset of `serve.deployment` options an operator sets per deployment."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | str | None = Field(1, description='a count, or "auto" with autoscaling_config')
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.5},
                                              description="e.g. {num_cpus: 1, num_gpus: 1}")
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int = Field(32, ge=1)
    user_config: dict[str, Any] | None = None

    def as_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        options = self.model_dump(exclude_none=True)
        if self.autoscaling_config is not None:
            options.pop("num_replicas", None)
        return options
