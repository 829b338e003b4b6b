"""
deploy/kubernetes/: every manifest valid against a current Kubernetes schema (kubernetes-validate
ships the schemas, so this runs offline), the settings the image's contract needs (non-root as
the image's uid, read-only root, /health probes, a volume per pod), and HAProxy's config in its
ConfigMap accepted by `haproxy -c`, with deploy/haproxy.cfg's rules and one server per pod.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import pypicached
from tests.cluster import haproxy_binary

PROJECT = Path(__file__).resolve().parent.parent
MANIFESTS = PROJECT / "deploy" / "kubernetes"
SHIPPED_HAPROXY = PROJECT / "deploy" / "haproxy.cfg"
IMAGE_BUILD = PROJECT / "deploy" / "image" / "build.sh"
#: Not older than the schemas current when this was written (kubernetes-validate 1.37).
OLDEST_SCHEMA = (1, 34)


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in yaml.safe_load_all((MANIFESTS / name).read_text())]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def haproxy_cfg() -> str:
    return one("ConfigMap", "pypicached-haproxy-config")["data"]["haproxy.cfg"]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    (image,) = kustomization()["images"]
    assert image["name"] == "pypicached" and image["newTag"] == pypicached.__version__


@pytest.mark.parametrize("strict", [False, True], ids=["schema", "strict"])
def test_manifests_validate(strict: bool) -> None:
    version = kubernetes_validate.latest_version()
    assert tuple(int(part) for part in version.split(".")[:2]) >= OLDEST_SCHEMA, version
    kinds = []
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=strict)  # raises ValidationError
        kinds.append(resource["kind"])
    assert sorted(kinds) == sorted(
        ["Namespace", "ConfigMap", "ConfigMap", "Service", "Service", "StatefulSet", "Deployment"]
    )


def test_validation_catches_a_mistake() -> None:
    """The validator does reject what the API server would: a probe's port as a list."""
    broken = one("StatefulSet", "pypicached")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [3141]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_statefulset_keeps_the_images_contract() -> None:
    statefulset = one("StatefulSet", "pypicached")
    pod = statefulset["spec"]["template"]["spec"]
    uid = int(re.search(r"PYPICACHED_UID:-(\d+)", IMAGE_BUILD.read_text()).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == uid
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["ports"] == [{"name": "http", "containerPort": 3141}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mounts["/var/cache/pypicached"] == claim["metadata"]["name"]  # writable: its own volume
    assert mounts["/etc/pypicached"] == "config" and "/tmp" in mounts
    config = one("ConfigMap", "pypicached-config")["data"]["pypicached.toml"]
    assert 'listen = ["tcp:3141"]' in config and 'cache_dir = "/var/cache/pypicached"' in config
    nodes = one("Service", statefulset["spec"]["serviceName"])
    assert nodes["spec"]["clusterIP"] == "None"


def test_haproxy_servers_are_the_pods() -> None:
    statefulset = one("StatefulSet", "pypicached")
    domain = f"{statefulset['spec']['serviceName']}.{kustomization()['namespace']}.svc.cluster.local"
    servers = re.findall(r"^\s*server (\S+) (\S+) id (\d+)$", haproxy_cfg(), re.M)
    assert servers == [
        (f"node{i + 1}", f"pypicached-{i}.{domain}:3141", str(i + 1)) for i in range(statefulset["spec"]["replicas"])
    ]
    deployment = one("Deployment", "pypicached-haproxy")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    clients = one("Service", "pypicached")
    assert clients["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def _section(cfg: str, header: str) -> list[str]:
    """A section's lines, comments, blank lines and server lines aside."""
    lines = cfg.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1 :]:
        if line and not line[0].isspace():
            break
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "server ", "default-server resolvers")):
            body.append(stripped)
    return body


@pytest.mark.parametrize("header", ["defaults", "backend pypicached"])
def test_haproxy_rules_are_deploy_haproxy_cfgs(header: str) -> None:
    shipped = _section(SHIPPED_HAPROXY.read_text(), header)
    assert len(shipped) > 10
    assert _section(haproxy_cfg(), header) == shipped


def test_haproxy_accepts_the_configmaps_config(tmp_path: Path) -> None:
    """`haproxy -c` without the cluster's DNS: servers start unresolved (init-addr none)."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg())
    done = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Configuration file is valid" in output, output
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address" in line for line in warnings), warnings
