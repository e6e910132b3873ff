"""A small kustomize for the tests: builds deploy/'s base and overlays with the features they use.

Supported (and nothing else, so a kustomization using more fails loudly): `resources` (files and
kustomization folders), `namespace` (objects and ServiceAccount subjects without one), `images` (newName,
newTag on every container and init container) and `patches` holding JSON 6902 operations (add, replace,
remove) with a kind/name `target`. tests/unit/deploy/test_kustomize_equivalence.py checks it against the real
kustomize (the pinned one `make test` installs, else `kubectl kustomize`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def load_documents(path: Path) -> list[Manifest]:
    """The objects of a YAML file, each a plain tree (YAML aliases become copies, as kustomize makes them)."""
    return [json.loads(json.dumps(doc)) for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(folder: Path) -> list[Manifest]:
    """The objects `kustomize build folder` would emit (in resource order)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    assert not unknown, f"{folder}: kustomization keys this helper does not implement: {sorted(unknown)}"
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects.extend(build(path) if path.is_dir() else load_documents(path))
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch, folder)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    if namespace := kustomization.get("namespace"):
        _set_namespace(objects, namespace)
    return objects


def containers(manifest: Manifest) -> Iterator[tuple[str, Manifest]]:
    """Every (path, container) of an object: containers and init containers anywhere in it."""
    def walk(node: Any, path: str) -> Iterator[tuple[str, Manifest]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for index, container in enumerate(value):
                        yield f"{path}/{key}/{index}", container
                else:
                    yield from walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, f"{path}/{index}")
    yield from walk(manifest, "")


def _apply_patch(objects: list[Manifest], patch: Manifest, folder: Path) -> None:
    assert set(patch) == {"path", "target"}, f"only JSON 6902 patch files with a target are implemented: {patch}"
    target = patch["target"]
    matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    assert len(matches) == 1, f"patch target {target} matches {len(matches)} objects"
    operations = yaml.safe_load((folder / patch["path"]).read_text())
    assert isinstance(operations, list), f"{patch['path']}: not a list of JSON 6902 operations"
    for operation in operations:
        _apply_operation(matches[0], operation)


def _apply_operation(document: Manifest, operation: Manifest) -> None:
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    value = json.loads(json.dumps(operation.get("value")))
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, value)
        elif op == "replace":
            node[index] = value
        elif op == "remove":
            del node[index]
        else:
            raise AssertionError(f"JSON 6902 op {op!r} is not implemented")
    elif op in ("add", "replace"):
        assert op == "add" or last in node, f"replace of a missing path {operation['path']}"
        node[last] = value
    elif op == "remove":
        del node[last]
    else:
        raise AssertionError(f"JSON 6902 op {op!r} is not implemented")


def _set_image(objects: list[Manifest], image: Manifest) -> None:
    for manifest in objects:
        for _, container in containers(manifest):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _set_namespace(objects: list[Manifest], namespace: str) -> None:
    for manifest in objects:
        if manifest["kind"] == "Namespace":
            manifest["metadata"]["name"] = namespace  # as kustomize does
        elif manifest["kind"] not in CLUSTER_SCOPED:
            manifest["metadata"]["namespace"] = namespace
        for subject in manifest.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject.setdefault("namespace", namespace)
