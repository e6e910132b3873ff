"""deploy/: every object is admitted (CRD schemas, Kubernetes schemas) and says what the service needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import load_service_config
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build, containers, load_documents
from tests.unit.deploy.schemas import core_errors, crd_errors, is_custom, ray_cluster_spec

DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = ("overlays/cpu", "overlays/gpu")
ONE_OFF = {"overlays/cpu": "retrain-once/cpu", "overlays/gpu": "retrain-once/gpu"}  # the same flavour's RayJob
FOLDERS = ("base", "secrets", *OVERLAYS, "retrain-once/base", *ONE_OFF.values())
SERVE_PORT = 8002


def _files() -> list[Path]:
    return sorted(p for folder in ("base", "secrets", "retrain-once/base") for p in (DEPLOY / folder).glob("*.yaml")
                  if p.name != "kustomization.yaml")


def _built(folder: str) -> list[dict[str, Any]]:
    return build(DEPLOY / folder)


def _flavour(overlay: str) -> list[dict[str, Any]]:
    """An overlay's objects and the one-off retraining of the same flavour."""
    return _built(overlay) + _built(ONE_OFF[overlay])


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _ray_clusters(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object kind, RayCluster spec) of the RayService, the RayJob and the RayCronJob."""
    return [(manifest["kind"], cluster) for manifest in objects if (cluster := ray_cluster_spec(manifest))]


def _ray_templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod template of the head and of every worker group."""
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def _ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray container (the first) of the head and of every worker group."""
    return [template["spec"]["containers"][0] for template in _ray_templates(cluster)]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_file_is_admitted(path: Path):
    for manifest in load_documents(path):
        errors = crd_errors(manifest) if is_custom(manifest) else core_errors(manifest)
        assert not errors, f"{manifest['kind']}/{manifest['metadata']['name']}: {errors}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_built_object_is_admitted(folder: str):
    objects = _built(folder)
    assert objects
    for manifest in objects:
        errors = crd_errors(manifest) if is_custom(manifest) else core_errors(manifest)
        assert not errors, f"{folder}: {manifest['kind']}/{manifest['metadata']['name']}: {errors}"
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "kcloud"


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_ray_container_has_the_serve_port_and_its_node_name(folder: str):
    objects = _flavour(folder)
    assert {kind for kind, _ in _ray_clusters(objects)} == {"RayService", "RayJob", "RayCronJob"}
    for kind, cluster in _ray_clusters(objects):
        for container in _ray_containers(cluster):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, (kind, container)
            if kind == "RayService":  # KubeRay's readiness and serve probes look at the port named `serve`
                assert {"containerPort": SERVE_PORT, "name": "serve"} in container["ports"], container["name"]


@pytest.mark.parametrize("folder", OVERLAYS)
def test_images_name_the_overlays_flavour(folder: str):
    flavour = folder.rsplit("/", 1)[1]
    for manifest in _flavour(folder):
        for path, container in containers(manifest):
            assert container["image"].endswith(f"/predictor:{flavour}"), (manifest["kind"], path)


@pytest.mark.parametrize("folder", OVERLAYS)
def test_the_scaled_app_uses_the_external_scaler_and_no_autoscaling_config(folder: str):
    service = _one(_built(folder), "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = {app["name"]: app for app in config["applications"]}
    power = apps["kcloud-power"]
    assert power["external_scaler_enabled"] is True
    assert "autoscaling_config" not in yaml.safe_dump(power)
    assert config["http_options"] == {"host": "0.0.0.0", "port": SERVE_PORT}


def test_gpu_overlay_puts_power_replicas_and_training_on_gpus():
    objects = _flavour("overlays/gpu")
    config = yaml.safe_load(_one(objects, "RayService")["spec"]["serveConfigV2"])
    main, power = config["applications"]
    assert main["args"]["retrain"]["use_gpu"]
    [predictor] = power["deployments"]
    assert predictor["name"] == "PowerPredictor" and predictor["ray_actor_options"]["num_gpus"] == 1
    for kind, cluster in _ray_clusters(objects):
        for group in cluster["workerGroupSpecs"]:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == "1", kind
    cpu_objects = _flavour("overlays/cpu")
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu_objects)


def test_model_volume_is_shared_and_state_volume_is_the_heads():
    objects = _flavour("overlays/gpu")
    claims = {o["metadata"]["name"]: o["spec"]["accessModes"] for o in objects
              if o["kind"] == "PersistentVolumeClaim"}
    assert claims == {"kcloud-models": ["ReadWriteMany"], "kcloud-state": ["ReadWriteOnce"]}
    for kind, cluster in _ray_clusters(objects):
        templates = [("head", cluster["headGroupSpec"]["template"])]
        templates += [(g["groupName"], g["template"]) for g in cluster["workerGroupSpecs"]]
        for group, template in templates:
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            claimed = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values()
                       if "persistentVolumeClaim" in v}
            assert "kcloud-models" in claimed, (kind, group)
            assert ("kcloud-state" in claimed) == (kind == "RayService" and group == "head"), (kind, group)


def test_every_referenced_secret_configmap_and_claim_is_defined():
    defined = {(o["kind"], o["metadata"]["name"]) for folder in ("base", "secrets") for o in _built(folder)}
    text = yaml.safe_dump(_flavour("overlays/gpu"))
    for kind, pattern in (("Secret", r"secretName: (\S+)"), ("Secret", r"secretKeyRef:\n\s+key: \S+\n\s+name: (\S+)"),
                          ("ConfigMap", r"configMapRef:\n\s+name: (\S+)"),
                          ("ConfigMap", r"configMap:\n\s+name: (\S+)"),
                          ("PersistentVolumeClaim", r"claimName: (\S+)"),
                          ("ServiceAccount", r"serviceAccountName: (\S+)")):
        names = set(re.findall(pattern, text))
        assert names, pattern
        assert {(kind, name) for name in names} <= defined, (kind, names)


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_ray_container_reads_the_config_file_of_the_configmap(folder: str, tmp_path):
    """Without it, `workloads`, `auto_scaling.policies` and `predictor.resolutions` could only be set by building
    them into the image."""
    objects = _flavour(folder)
    load_service_config(_shipped_config(objects, tmp_path), environ={})  # the shipped file validates
    for kind, cluster in _ray_clusters(objects):
        for template in _ray_templates(cluster):
            [container] = template["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            assert env["KCLOUD_CONFIG"] == f"{mounts['config']}/config.yaml", kind
            assert volumes["config"]["configMap"]["name"] == "kcloud-config", kind


@pytest.mark.parametrize("folder", OVERLAYS)
def test_init_containers_read_the_config_and_registry_of_their_ray_container(folder: str):
    """Regression: the demo-models initContainer trained without the config file, at the default resolutions and
    features, and later retrains kept that shape. It records its trainings with the service's attempts."""
    checked = 0
    for _, cluster in _ray_clusters(_flavour(folder)):
        for template in _ray_templates(cluster):
            ray_container = template["spec"]["containers"][0]
            for init in template["spec"].get("initContainers", []):
                for name in ("KCLOUD_CONFIG", "MODEL_PATH", "KCLOUD_STATE_PATH"):
                    assert _env(init)[name] == _env(ray_container)[name], (init["name"], name)
                for volume in ("config", "state"):
                    assert _mounts(init)[volume] == _mounts(ray_container)[volume], (init["name"], volume)
                if _env(init).get("RAY_AUTH_MODE") == "disabled":  # its own Ray without a token: on loopback only
                    assert _env(init).get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", init["name"]
                checked += 1
    assert checked >= 1  # the RayService head's demo-models


def _shipped_config(objects: list[dict[str, Any]], folder: Path) -> Path:
    """The config file of ConfigMap kcloud-config, written to `folder`."""
    [config_map] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kcloud-config"]
    path = folder / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    return path


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_secrets_are_placeholders_and_never_in_serve_config():
    secrets = [o for o in _built("secrets") if o["kind"] == "Secret"]
    values = [v for s in secrets for v in s["stringData"].values()]
    assert values and all(v.startswith("REPLACE_ME") for v in values)
    by_name = {s["metadata"]["name"]: s["stringData"] for s in secrets}
    assert set(by_name) == {"kcloud-api-token", "kcloud-ray-auth", "kcloud-influxdb", "kcloud-bmc"}
    assert "auth_token" in by_name["kcloud-ray-auth"]  # the key KubeRay reads
    for folder in OVERLAYS:
        text = _one(_built(folder), "RayService")["spec"]["serveConfigV2"]
        assert not any(value in text for value in values)
        args = yaml.safe_load(text)["applications"][0]["args"]
        secret_like = [key for key in _keys(args) if re.search(r"token|password|secret", key) and
                       not key.endswith("_file")]
        assert not secret_like, secret_like


@pytest.mark.parametrize("folder", OVERLAYS)
def test_dashboard_is_not_exposed_without_ray_token_auth(folder: str):
    secrets = {s["metadata"]["name"]: s for s in _built("secrets")}
    for kind, cluster in _ray_clusters(_flavour(folder)):
        auth = cluster.get("authOptions", {})
        host = cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0")
        if host != "127.0.0.1":
            assert auth.get("mode") == "token", kind
            assert "auth_token" in secrets[auth["secretName"]]["stringData"], kind


RAY_POD = {"ray.io/is-ray-node": "yes"}  # KubeRay's label on every Ray pod it creates (head and workers)
OPEN_PORTS = {8002, 8080}  # the REST API (API token) and the metrics (read-only)
DASHBOARD_CLIENTS = [  # the dashboard (8265: Ray token, and a job API that runs code) from these only
    {"podSelector": {}},  # this namespace's pods: a RayJob's submitter, the head itself
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/component": "kuberay-operator"}}},
]


def _ports_open_to_anyone(policy: dict[str, Any]) -> set[int | str]:
    """Ports any pod may reach under the policy ("all" where a rule with no `from` names no port; every port of a
    range, and a named port by its name)."""
    opened: set[int | str] = set()
    for rule in policy["spec"].get("ingress", []):
        if rule.get("from"):
            continue
        if not rule.get("ports"):
            opened.add("all")
        for port in rule.get("ports", []):
            first = port["port"]
            opened |= set(range(first, port["endPort"] + 1)) if "endPort" in port else {first}
    return opened


@pytest.mark.parametrize("folder", OVERLAYS)
def test_ray_s_own_ports_take_connections_from_ray_pods_only(folder: str):
    """GCS, the Ray client port, raylets and workers are reachable from the namespace's Ray pods; the dashboard from
    the namespace's pods and the KubeRay operator; any other pod may reach only the REST API and the metrics."""
    (policy,) = [o for o in _built(folder) if o["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {"matchLabels": RAY_POD}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _ports_open_to_anyone(policy) == OPEN_PORTS
    from_some = [rule for rule in policy["spec"]["ingress"] if rule.get("from")]
    # every port (raylets, object transfer and workers listen on ports Ray picks), from this namespace's Ray pods
    assert from_some == [{"from": [{"podSelector": {"matchLabels": RAY_POD}}]},
                         {"ports": [{"port": 8265, "protocol": "TCP"}], "from": DASHBOARD_CLIENTS}]
    head_ports = {p["containerPort"] for kind, cluster in _ray_clusters(_flavour(folder))
                  for p in _ray_containers(cluster)[0].get("ports", [])}
    assert {6379, 10001} <= head_ports  # the GCS and the Ray client port, declared, and closed to other pods above
    podmonitor = _one(_built(folder), "PodMonitor")
    assert podmonitor["spec"]["selector"] == {"matchLabels": RAY_POD}  # the label the policy selects is KubeRay's


def test_a_rule_open_to_every_port_or_a_range_is_caught():
    policy = {"spec": {"ingress": [{"ports": [{"port": 8002}]}, {}, {"ports": [{"port": 6370, "endPort": 6380}]}]}}
    assert _ports_open_to_anyone(policy) == {8002, "all", *range(6370, 6381)}


def test_autoscaler_rbac_is_get_and_patch_on_scale_targets_only():
    role = _one(_built("base"), "Role")
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["get", "patch"]},
        {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get", "patch"]},
    ]
    binding = _one(_built("base"), "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kcloud-autoscaler", "namespace": "kcloud"}]
    service = _one(_built("base"), "RayService")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "kcloud-autoscaler"


def test_retraining_jobs_name_the_registry_and_the_cron_schedule():
    objects = _flavour("overlays/cpu")
    cron = _one(objects, "RayCronJob")
    assert len(cron["spec"]["schedule"].split()) == 5
    for entrypoint in (_one(objects, "RayJob")["spec"]["entrypoint"], cron["spec"]["jobTemplate"]["entrypoint"]):
        assert "--model-path /models" in entrypoint
    for kind, cluster in _ray_clusters(objects):  # the jobs lock alone (no state volume), said by a path of the pod's
        if kind != "RayService":
            assert _env(cluster["headGroupSpec"]["template"]["spec"]["containers"][0])["KCLOUD_STATE_PATH"], kind


def test_retraining_jobs_start_no_work_until_an_operator_asks():
    """A default install must not launch a 10-CPU training cluster (that would also fail on the embedded store); and
    re-applying an overlay must not touch a one-off retraining that runs (a suspended RayJob in the overlay was
    suspended again, and KubeRay deleted its cluster mid-training)."""
    for overlay in OVERLAYS:
        objects = _built(overlay)
        assert [o for o in objects if o["kind"] == "RayJob"] == []
        assert _one(objects, "RayCronJob")["spec"]["suspend"] is True
        assert "suspend" not in _one(_built(ONE_OFF[overlay]), "RayJob")["spec"]  # created when wanted


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
"""The volume types Kubernetes' "restricted" Pod Security level admits."""


def _pod_templates(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every pod the objects make: Ray heads and workers, and the RayJobs' submitters."""
    found = []
    for manifest in objects:
        spec = manifest.get("spec", {}) if manifest["kind"] in ("RayJob", "RayCronJob") else {}
        job = spec.get("jobTemplate", spec)
        if "submitterPodTemplate" in job:
            found.append((f"{manifest['kind']} submitter", job["submitterPodTemplate"]))
    for kind, cluster in _ray_clusters(objects):
        found += [(f"{kind} {index}", template) for index, template in enumerate(_ray_templates(cluster))]
    return found


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of the "restricted" Pod Security level (its checks, "baseline" included, for the
    fields these manifests could set)."""
    security = pod.get("securityContext", {})
    found = [] if security.get("runAsNonRoot") is True else ["runAsNonRoot"]
    found += [f"host namespace {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    found += _shared_violations(security, pod_level=True) + (["sysctls"] if security.get("sysctls") else [])
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        problems = _container_violations(container.get("securityContext"))
        problems += ["hostPort"] if any(port.get("hostPort") for port in container.get("ports", [])) else []
        found += [f"{container['name']}: {problem}" for problem in problems]
    return found


def _container_violations(security: dict[str, Any] | None) -> list[str]:
    security = security or {}
    capabilities = security.get("capabilities", {})
    found = [] if security.get("allowPrivilegeEscalation") is False else ["allowPrivilegeEscalation"]
    found += [] if "ALL" in capabilities.get("drop", []) else ["capabilities not dropped"]
    found += [] if set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"} else ["capabilities added"]
    found += ["privileged"] if security.get("privileged") else []
    found += ["runAsNonRoot false"] if security.get("runAsNonRoot") is False else []
    found += ["procMount"] if security.get("procMount", "Default") != "Default" else []
    return found + _shared_violations(security, pod_level=False)


def _shared_violations(security: dict[str, Any], *, pod_level: bool) -> list[str]:
    """Checks that apply to a pod's and a container's securityContext alike (a container's overrides the pod's)."""
    seccomp = security.get("seccompProfile", {}).get("type")
    found = ["seccomp"] if (seccomp not in ("RuntimeDefault", "Localhost") if pod_level else seccomp == "Unconfined") \
        else []
    found += ["runAsUser 0"] if security.get("runAsUser") == 0 else []
    found += ["appArmor unconfined"] if security.get("appArmorProfile", {}).get("type") == "Unconfined" else []
    found += ["hostProcess"] if security.get("windowsOptions", {}).get("hostProcess") else []
    selinux = security.get("seLinuxOptions", {})
    return found + (["seLinuxOptions"] if selinux.get("user") or selinux.get("role") else [])


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_level_its_namespace_enforces(folder: str):
    """KubeRay's injected containers take theirs from the template: a worker's wait-gcs-ready from its Ray container,
    the autoscaler sidecar from autoscalerOptions."""
    objects = _flavour(folder)
    namespaces = [o for o in _built("base") + _built("secrets") if o["kind"] == "Namespace"]
    assert len(namespaces) == 2 and namespaces[0] == namespaces[1]  # neither apply drops the other's labels
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    templates = _pod_templates(objects)
    assert {where.split()[0] for where, _ in templates} == {"RayService", "RayJob", "RayCronJob"}
    assert sum("submitter" in where for where, _ in templates) == 2
    for where, template in templates:
        assert _restricted_violations(template["spec"]) == [], where
        security = template["spec"]["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (1000, 100, 100), where
    for kind, cluster in _ray_clusters(objects):
        if cluster.get("enableInTreeAutoscaling"):
            assert _container_violations(cluster["autoscalerOptions"].get("securityContext")) == [], kind


def test_a_pod_that_breaks_the_restricted_level_is_caught():
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "ok", "securityContext": container}]}
    assert _restricted_violations(pod) == []
    broken = [
        ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "volume host"),
        ({"hostPID": True}, "host namespace hostPID"),
        ({"securityContext": {**pod["securityContext"], "sysctls": [{"name": "kernel.msgmax", "value": "1"}]}},
         "sysctls"),
        ({"securityContext": {"runAsNonRoot": True}}, "seccomp"),
        ({"containers": [{"name": "c", "securityContext": {**container, "capabilities": {
            "drop": ["ALL"], "add": ["SYS_ADMIN"]}}}]}, "c: capabilities added"),
        ({"containers": [{"name": "c", "securityContext": {**container, "runAsUser": 0}}]}, "c: runAsUser 0"),
        ({"containers": [{"name": "c", "securityContext": {**container, "seccompProfile": {"type": "Unconfined"}}}]},
         "c: seccomp"),
        ({"containers": [{"name": "c", "securityContext": container,
                          "ports": [{"containerPort": 80, "hostPort": 80}]}]}, "c: hostPort"),
        ({"initContainers": [{"name": "i"}]}, "i: allowPrivilegeEscalation"),
    ]
    for change, expected in broken:
        assert expected in _restricted_violations({**pod, **change}), expected


@pytest.mark.parametrize("folder", OVERLAYS)
def test_only_the_service_head_holds_a_kubernetes_api_token(folder: str):
    """The scaling controller (on the service's head) patches scale targets; nothing else calls the API."""
    for where, template in _pod_templates(_flavour(folder)):
        automount = template["spec"].get("automountServiceAccountToken", True)
        assert automount == (where == "RayService 0"), where


@pytest.mark.parametrize("folder", OVERLAYS)
def test_the_job_submitters_carry_the_ray_token(folder: str):
    for where, template in _pod_templates(_flavour(folder)):
        if "submitter" in where:
            [container] = template["spec"]["containers"]
            env = {e["name"]: e for e in container["env"]}
            token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert token == {"name": "kcloud-ray-auth", "key": "auth_token"}
            assert "command" not in container  # KubeRay's `ray job submit`


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_service_pod_spills_telemetry_to_a_volume_that_holds_the_cap(folder: str, tmp_path):
    """The collectors (one per node) spill while the store is down; on the container's own disk the spill would go
    with any restart of the container and count against its ephemeral storage."""
    objects = _built(folder)
    telemetry = load_service_config(_shipped_config(objects, tmp_path), environ={}).telemetry
    for template in _ray_templates(_one(objects, "RayService")["spec"]["rayClusterConfig"]):
        spec = template["spec"]
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == telemetry.spill_dir]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert _mib(volume["emptyDir"]["sizeLimit"]) >= 2 * telemetry.max_spill_mib


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_cron_runs_are_deleted_after_a_week_and_their_clusters_after_they_end():
    """Without rules every daily run left its RayJob; KubeRay refuses rules beside shutdownAfterJobFinishes, and a
    policy that deletes more must not come earlier than one that deletes less."""
    job = _one(_built("base"), "RayCronJob")["spec"]["jobTemplate"]
    assert "shutdownAfterJobFinishes" not in job and "ttlSecondsAfterFinished" not in job
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for rule in job["deletionStrategy"]["deletionRules"]:
        [(field, status)] = [(k, v) for k, v in rule["condition"].items() if k != "ttlSeconds"]
        ttls.setdefault((field, status), {})[rule["policy"]] = rule["condition"]["ttlSeconds"]
    assert set(ttls) == {("jobStatus", "SUCCEEDED"), ("jobStatus", "FAILED"), ("jobDeploymentStatus", "Failed")}
    for policies in ttls.values():
        assert policies["DeleteCluster"] <= 3600 and policies["DeleteSelf"] >= max(policies["DeleteCluster"], 86_400)


def test_the_secrets_create_their_namespace():
    """`kubectl apply -k deploy/secrets` runs first, before the base has made the namespace."""
    assert _one(_built("secrets"), "Namespace")["metadata"]["name"] == "kcloud"


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in (key, *_keys(value))]
    if isinstance(node, list):
        return [k for item in node for k in _keys(item)]
    return []


@pytest.mark.parametrize("folder", OVERLAYS)
def test_ray_containers_read_tokens_and_passwords_from_mounted_secret_files(folder: str):
    """An environment variable is handed on to every worker process Ray starts (and to the jobs it runs); a file
    on a Secret volume is read only by what opens it. From Secrets as env come only the BMC user name and the
    optional store URL with a login (`kcloud-telemetry-store`); KubeRay adds Ray's own token itself. Every Ray
    container reads the store (collectors on every node, retraining), so each has the InfluxDB token's file."""
    for where, template in _pod_templates(_flavour(folder)):
        if "submitter" in where:  # KubeRay's `ray job submit` reads Ray's token only as RAY_AUTH_TOKEN
            continue
        spec = template["spec"]
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        for index, container in enumerate(spec["containers"] + spec.get("initContainers", [])):
            for entry in container.get("env", []):
                reference = entry.get("valueFrom", {}).get("secretKeyRef")
                assert reference is None or reference["key"] == "username", (where, entry["name"])
            env_secrets = {source["secretRef"]["name"] for source in container.get("envFrom", [])
                           if "secretRef" in source}
            assert env_secrets <= {"kcloud-telemetry-store"}, (where, env_secrets)
            secret_mounts = {m["mountPath"]: secret_volumes[m["name"]]
                             for m in container.get("volumeMounts", []) if m["name"] in secret_volumes}
            files = {name: secret_mounts.get(str(Path(path).parent)) for name, path in _env(container).items()
                     if name.endswith("_FILE") and re.search(r"TOKEN|PASSWORD", name)}
            assert None not in files.values(), (where, files)  # every such file lies on a Secret's mount
            if index == 0:  # the Ray container
                assert files.get("INFLUX_TOKEN_FILE") == "kcloud-influxdb", (where, files)
