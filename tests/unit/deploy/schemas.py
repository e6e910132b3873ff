"""Offline admission checks: custom objects (KubeRay's, the Prometheus Operator's PodMonitor) against the real CRD
schemas, core objects with kubernetes-validate."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.paths import TEST_DATA

CRD_DIRS = (TEST_DATA / "kuberay-crds", TEST_DATA / "prometheus-operator-crds")
# The oldest Kubernetes the manifests are meant for, and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """{(apiVersion, kind): validator} for every served version of every CRD in CRD_DIRS."""
    validators = {}
    for path in sorted(path for folder in CRD_DIRS for path in folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(manifest: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this custom object (empty: admitted), checked by its CRD's schema."""
    validator = crd_validators()[(manifest["apiVersion"], manifest["kind"])]
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(manifest)]


def core_errors(manifest: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this core object, strictly (unknown fields too), for each version."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"Kubernetes {version}: {'/'.join(map(str, exc.path))}: {exc.message}")
    return errors


def is_custom(manifest: dict[str, Any]) -> bool:
    """A custom object of a CRD the tests hold (KubeRay's, PodMonitor)."""
    return (manifest["apiVersion"], manifest["kind"]) in crd_validators()


def ray_cluster_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The RayCluster spec inside a RayService, RayJob or RayCronJob; None for other objects."""
    spec = manifest.get("spec", {})
    return (spec.get("rayClusterConfig") or spec.get("rayClusterSpec")
            or spec.get("jobTemplate", {}).get("rayClusterSpec"))


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused (as `kubectl apply` does by default, field validation Strict):
    every object that lists its properties and does not preserve unknown fields gets additionalProperties false.
    The `x-kubernetes-*` extensions are otherwise ignored (jsonschema skips keywords it does not know)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict
