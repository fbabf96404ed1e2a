"""deploy/kubernetes: what `make k8s-render` renders is valid, and it is the compose stack.

No cluster runs here. The proof is static:
- every object validates against the Kubernetes 1.37 API schemas with unknown fields
  rejected (PyPI kubernetes-validate, strict), and every ServiceMonitor and PrometheusRule
  against pydantic models generated from the Prometheus Operator's CRDs (PyPI
  cloudcoil-models-prometheus-operator 0.80.1), with unknown fields rejected too (an object
  must survive validate -> dump unchanged); a typo'd field fails both;
- the PrometheusRules' groups are the rule files compose's Prometheus loads, and pass
  `promtool check rules`; the dashboard ConfigMap holds the dashboard file byte for byte;
  the gateway ConfigMaps are gateway/ byte for byte and pass `nginx -t` with the Service
  names mapped to loopback (as test_gateway_config.py does for the compose names);
- the containers are hardened as compose's are, with compose's images and environment.

Needs: kubectl, kubernetes-validate and cloudcoil from the lock (uv sync), promtool and
nginx (Debian, scripts/install-deps). A missing one fails the tests, it never skips them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator_v1
from fastapi.testclient import TestClient

from stackctl import kubernetes
from testkit.helpers import tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GATEWAY_DIR = ROOT / "gateway"
RULES_DIR = ROOT / "observability" / "prometheus" / "rules"
PROMETHEUS_CONFIG = yaml.safe_load((ROOT / "observability/prometheus/prometheus.yml").read_text())
DASHBOARD = ROOT / "observability/grafana/dashboards/services-overview.json"
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "fastapi-observability"
NOBODY = 65534
# The gateway's upstreams (gateway/conf.d/10-upstreams.conf) are these Services.
UPSTREAMS = {"api-svc": 8000, "processor-svc": 8001}
# Kinds that run pods, and where their pod template is.
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
# Sidecars and one-shot containers need no readiness for the Service; the rest do.
EXPOSED_PROBES = ("livenessProbe", "readinessProbe")
SECRET_NAME = re.compile(r"PASSWORD|PASS$|SECRET|TOKEN", re.I)


# --------------------------------------------------------------------------- rendering


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every target as `make k8s-render` writes it (the same function)."""
    out = tmp_path_factory.mktemp("k8s")
    paths = kubernetes.render_all(out)
    assert set(paths) == {"base", "local", "kube-prometheus-stack"}
    return {target: _objects(path.read_text()) for target, path in paths.items()}


@pytest.fixture(scope="module")
def kps(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["kube-prometheus-stack"]


def _all(rendered: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for target, objects in rendered.items():
        for obj in objects:
            yield target, obj


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _configmap(objects: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    pattern = re.compile(rf"^{re.escape(prefix)}(-[a-z0-9]{{10}})?$")
    found = [
        o for o in objects if o["kind"] == "ConfigMap" and pattern.match(o["metadata"]["name"])
    ]
    assert len(found) == 1, f"ConfigMap {prefix}: {len(found)} found"
    return found[0]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def _container(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    containers = _pod_spec(_find(objects, kind, name))["containers"]
    return next(c for c in containers if c["name"] == name)


def _environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env with
    configMapKeyRef resolved, secretKeyRef as `<secret:name/key>` and $(VAR) expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_configmap(objects, source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), var["value"]
            )
        elif ref := var["valueFrom"].get("configMapKeyRef"):
            env[var["name"]] = _configmap(objects, ref["name"])["data"][ref["key"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"<secret:{ref['name']}/{ref['key']}>"
    return env


def _compose_value(value: str) -> str:
    """Compose interpolation with an empty .env: defaults, and `<VAR>` for required ones."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", value)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", r"<\1>", value)


def _compose_env(service: str) -> dict[str, str]:
    return {
        k: _compose_value(str(v)) for k, v in COMPOSE["services"][service]["environment"].items()
    }


# --------------------------------------------------------------------------- validation


# What a failed validation raises: a schema violation, a CRD model's, or a field it dropped.
INVALID = (kubernetes_validate.ValidationError, pydantic.ValidationError, AssertionError)


def _validate_kubernetes(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _validate_operator(obj: dict[str, Any]) -> None:
    """The CRD's schema (types, patterns, enums, required) and no field it does not know."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
    model = getattr(operator_v1, obj["kind"])
    dumped = model.model_validate(obj).model_dump(by_alias=True, exclude_unset=True, mode="json")
    # pydantic drops what the model does not know: a field lost on the way is an unknown one.
    assert dumped == obj, f"{obj['kind']}/{obj['metadata']['name']}: fields the CRD lacks"


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        _validate_operator(obj)
    else:
        _validate_kubernetes(obj)


def test_kubectl_is_the_locked_one() -> None:
    result = subprocess.run(
        [kubernetes.kubectl(), "version", "--client", "-o", "yaml"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    versions = yaml.safe_load(result.stdout)
    assert versions["clientVersion"]["gitVersion"].startswith("v1.37."), versions
    assert versions["kustomizeVersion"].startswith("v5."), versions


def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    seen: set[str] = set()
    checked: set[str] = set()
    for target, obj in _all(rendered):
        key = json.dumps(obj, sort_keys=True)  # the base's objects recur in every overlay
        if key in checked:
            continue
        checked.add(key)
        try:
            validate(obj)
        except Exception as error:
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {error}")
        seen.add(obj["kind"])
    assert {"ServiceMonitor", "PrometheusRule", "Deployment", "StatefulSet", "Job"} <= seen


def _typo(obj: dict[str, Any], path: tuple[str | int, ...], new_key: str) -> dict[str, Any]:
    bad = copy.deepcopy(obj)
    parent: Any = bad
    for step in path[:-1]:
        parent = parent[step]
    parent[new_key] = parent.pop(path[-1])
    return bad


@pytest.mark.parametrize(
    ("kind", "name", "path", "typo"),
    [
        ("Deployment", "api-svc", ("spec", "template", "spec", "containers", 0, "ports", 0,
                                    "containerPort"), "containerPortz"),
        ("Deployment", "gateway", ("spec", "template", "spec", "terminationGracePeriodSeconds"),
         "terminationGracePeriod"),
        ("Service", "api-svc", ("spec", "ports", 0, "port"), "portz"),
        ("HorizontalPodAutoscaler", "api-svc", ("spec", "minReplicas"), "minReplica"),
        ("ServiceMonitor", "api-svc", ("spec", "endpoints", 0, "port"), "portz"),
        ("ServiceMonitor", "api-svc", ("spec", "endpoints", 0, "relabelings", 0, "targetLabel"),
         "target_label"),
        ("ServiceMonitor", "api-svc", ("metadata", "labels"), "label"),
        ("PrometheusRule", "fastapi-alerts", ("spec", "groups", 0, "rules", 0, "for"), "fro"),
    ],
)  # fmt: skip
def test_a_typo_fails_validation(
    kps: list[dict[str, Any]], kind: str, name: str, path: tuple[str | int, ...], typo: str
) -> None:
    obj = _find(kps, kind, name)
    validate(obj)  # the original passes
    with pytest.raises(INVALID):
        validate(_typo(obj, path, typo))


def test_a_wrong_type_or_value_fails_validation(kps: list[dict[str, Any]]) -> None:
    monitor = copy.deepcopy(_find(kps, "ServiceMonitor", "api-svc"))
    monitor["spec"]["endpoints"][0]["interval"] = "5 seconds"  # the CRD's duration pattern
    with pytest.raises(INVALID):
        validate(monitor)
    deployment = copy.deepcopy(_find(kps, "Deployment", "api-svc"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(INVALID):
        validate(deployment)


def test_everything_is_in_the_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for target, obj in _all(rendered):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            assert obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, (target, obj["metadata"])


# --------------------------------------------------------------------------- one source


def test_prometheus_rules_are_the_rule_files(kps: list[dict[str, Any]]) -> None:
    rules = {o["metadata"]["name"]: o for o in kps if o["kind"] == "PrometheusRule"}
    files = sorted(RULES_DIR.glob("*.yml"))
    assert sorted(rules) == [f"fastapi-{f.stem}" for f in files]
    for path in files:
        rule = rules[f"fastapi-{path.stem}"]
        assert rule["spec"] == yaml.safe_load(path.read_text()), path.name
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rules_pass_promtool(kps: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = tool("promtool")
    paths = []
    for rule in (o for o in kps if o["kind"] == "PrometheusRule"):
        path = tmp_path / f"{rule['metadata']['name']}.yml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
        paths.append(str(path))
    assert len(paths) == len(list(RULES_DIR.glob("*.yml")))
    result = subprocess.run(
        [promtool, "check", "rules", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(paths), result.stdout


def test_a_threshold_setting_reaches_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """POSTGRES_TPS_THRESHOLD works as in compose: through the same render-config.sh."""
    monkeypatch.setenv("POSTGRES_TPS_THRESHOLD", "250")
    rule = next(
        r for r in kubernetes.prometheus_rules() if r["metadata"]["name"].endswith("-thresholds")
    )
    assert rule["spec"]["groups"][0]["rules"][0]["expr"] == "vector(250)"


def test_the_generated_rules_are_not_committed() -> None:
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--error-unmatch", str(kubernetes.GENERATED_RULES)],
        capture_output=True,
        check=False,
    )
    assert tracked.returncode != 0, "prometheusrule.generated.yaml must stay out of git"


def test_dashboard_configmap_is_the_file(kps: list[dict[str, Any]]) -> None:
    dashboard = _find(kps, "ConfigMap", "services-overview-dashboard")  # no hash suffix
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"services-overview.json": DASHBOARD.read_text()}


def _gateway_files(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The gateway's files as its pod sees them under /etc/nginx, from its ConfigMaps."""
    deployment = _find(objects, "Deployment", "gateway")
    volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
    gateway = next(c for c in _pod_spec(deployment)["containers"] if c["name"] == "gateway")
    files: dict[str, str] = {}
    for mount in gateway["volumeMounts"]:
        config = volumes[mount["name"]].get("configMap")
        if config is None:
            continue
        data = _find(objects, "ConfigMap", config["name"])["data"]
        relative = Path(mount["mountPath"]).relative_to("/etc/nginx")
        if "subPath" in mount:
            files[str(relative)] = data[mount["subPath"]]
        else:
            files.update({str(relative / key): value for key, value in data.items()})
    return files


def test_gateway_configmaps_are_the_gateway_files(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    expected = {str(p.relative_to(GATEWAY_DIR)): p.read_text() for p in GATEWAY_DIR.rglob("*.conf")}
    for objects in rendered.values():
        assert _gateway_files(objects) == expected


def test_gateway_upstreams_are_the_services(kps: list[dict[str, Any]]) -> None:
    text = _gateway_files(kps)["conf.d/10-upstreams.conf"]
    servers = set(re.findall(r"^\s*server\s+([a-z0-9-]+):(\d+)", text, re.M))
    assert servers == {(name, str(port)) for name, port in UPSTREAMS.items()}
    for name, port in UPSTREAMS.items():
        service = _find(kps, "Service", name)
        assert port in [p["port"] for p in service["spec"]["ports"]], name


def test_gateway_config_passes_nginx_t(kps: list[dict[str, Any]]) -> None:
    """The files of the ConfigMaps, laid out as mounted, the Service names mapped to loopback."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is not installed (Debian: apt-get install nginx)"
    work = Path(tempfile.mkdtemp(prefix="k8s-gw-"))
    try:
        work.chmod(0o755)
        (work / "prefix").mkdir()
        for relative, text in _gateway_files(kps).items():
            local = text
            for name, port in UPSTREAMS.items():
                local = local.replace(f"{name}:{port}", f"127.0.0.1:{port}")
            path = work / "etc" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(local)
        cmd = [
            nginx,
            "-p",
            f"{work / 'prefix'}/",
            "-c",
            str(work / "etc/nginx.conf"),
            "-e",
            "stderr",
            "-t",
        ]
        if os.geteuid() == 0:  # as an unprivileged user, like the pod (uid 101)
            os.chown(work / "prefix", NOBODY, NOBODY)
            cmd = [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--",
                *cmd,
            ]
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr
        assert "[warn]" not in result.stderr, result.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- hardening


def test_every_container_is_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for target, obj in _all(rendered):
        if obj["kind"] not in WORKLOADS:
            continue
        pod = _pod_spec(obj)
        where = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["enableServiceLinks"] is False, where
        assert not pod.get("hostNetwork"), where
        assert not pod.get("hostPID"), where
        for container in _containers(obj):
            context = container["securityContext"]
            at = f"{where} container {container['name']}"
            assert context["runAsNonRoot"] is True, at
            assert context.get("runAsUser", 1) != 0, at
            assert context["readOnlyRootFilesystem"] is True, at
            assert context["allowPrivilegeEscalation"] is False, at
            assert context["capabilities"] == {"drop": ["ALL"]}, at
            assert not context.get("privileged"), at
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{at}: {kind}"
            if obj["kind"] != "Job":
                for probe in EXPOSED_PROBES:
                    assert probe in container, f"{at}: no {probe}"


def test_writable_paths_are_the_compose_tmpfs(kps: list[dict[str, Any]]) -> None:
    for name in ("api-svc", "processor-svc", "gateway"):
        service = COMPOSE["services"][name]
        tmpfs = {entry.split(":")[0] for entry in service["tmpfs"]}
        deployment = _find(kps, "Deployment", name)
        volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
        mounts = {
            m["mountPath"]
            for m in _container(kps, "Deployment", name)["volumeMounts"]
            if "emptyDir" in volumes[m["name"]]
        }
        assert mounts == tmpfs, name
    env = _environment(kps, _container(kps, "Deployment", "api-svc"))
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"  # noqa: S108


def _compose_images() -> set[str]:
    return {_compose_value(s["image"]) for s in COMPOSE["services"].values()}


def test_images_are_pinned_as_compose_pins_them(rendered: dict[str, list[dict[str, Any]]]) -> None:
    compose_images = _compose_images()
    for target, obj in _all(rendered):
        if obj["kind"] not in WORKLOADS:
            continue
        for container in _containers(obj):
            image = container["image"]
            assert "latest" not in image, (target, image)
            assert image in compose_images, f"{target}: {image} is not an image of compose"
            assert container["imagePullPolicy"] == "IfNotPresent", (target, image)


def test_compose_and_kubernetes_name_the_same_service_images(kps: list[dict[str, Any]]) -> None:
    for kind, name, container, compose in (
        ("Deployment", "api-svc", "api-svc", "api-svc"),
        ("Deployment", "processor-svc", "processor-svc", "processor-svc"),
        ("Job", "api-svc-migrate", "migrate", "migrate"),
        ("Deployment", "gateway", "gateway", "gateway"),
        ("Deployment", "gateway", "nginx-exporter", "nginx-exporter"),
        ("Deployment", "postgres-exporter", "postgres-exporter", "postgres-exporter"),
    ):
        containers = _pod_spec(_find(kps, kind, name))["containers"]
        image = next(c["image"] for c in containers if c["name"] == container)
        assert image == _compose_value(COMPOSE["services"][compose]["image"]), name


def test_grace_period_outlasts_prestop_and_gunicorn(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    compose_graceful = int(_compose_env("api-svc")["GRACEFUL_TIMEOUT"])
    for target, objects in rendered.items():
        for name in ("api-svc", "processor-svc", "gateway"):
            deployment = _find(objects, "Deployment", name)
            container = _container(objects, "Deployment", name)
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep", (target, name)
            pause = int(pre_stop[1])
            assert pause >= 5, (target, name)
            env = _environment(objects, container)
            graceful = int(env.get("GRACEFUL_TIMEOUT", compose_graceful))
            assert graceful == compose_graceful
            period = _pod_spec(deployment)["terminationGracePeriodSeconds"]
            assert period > pause + graceful, (target, name, period)


def test_probes(kps: list[dict[str, Any]]) -> None:
    api = _container(kps, "Deployment", "api-svc")
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    processor = _container(kps, "Deployment", "processor-svc")
    assert processor["livenessProbe"]["httpGet"]["path"] == "/health"
    # processor-svc has no /ready (next test): /health is its readiness too.
    assert processor["readinessProbe"]["httpGet"]["path"] == "/health"
    gateway = _container(kps, "Deployment", "gateway")
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/health", "port": "status"}
    for container in (api, processor):
        assert container["readinessProbe"]["httpGet"]["port"] == "http"


def test_the_probed_paths_are_served() -> None:
    from api_svc.main import create_app as api_app  # noqa: PLC0415
    from processor_svc.main import create_app as processor_app  # noqa: PLC0415

    assert {"/health", "/ready"} <= set(api_app().openapi()["paths"])
    with TestClient(processor_app()) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 404


def test_autoscalers_and_disruption_budgets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for target, objects in rendered.items():
        for name in ("api-svc", "processor-svc"):
            hpa = _find(objects, "HorizontalPodAutoscaler", name)
            assert hpa["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
            }  # fmt: skip
            assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], target
        for name in ("api-svc", "processor-svc", "gateway"):
            pdb = _find(objects, "PodDisruptionBudget", name)
            labels = _find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
            assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            assert pdb["spec"]["minAvailable"] == 1


# --------------------------------------------------------------------------- environment


def test_service_environment_is_compose_s(kps: list[dict[str, Any]]) -> None:
    for name in ("api-svc", "processor-svc"):
        compose = _compose_env(name)
        env = _environment(kps, _container(kps, "Deployment", name))
        # Set differently on purpose: the Tempo chart's address (the overlay), and the
        # database URL assembled from the Secret and the messages-db ConfigMap.
        assert env.pop("OTEL_EXPORTER_OTLP_ENDPOINT") == (
            "http://tempo.monitoring.svc.cluster.local:4318"
        )
        assert compose.pop("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://tempo:4318"
        if name == "api-svc":
            assert compose.pop("DATABASE_URL") == (
                "postgresql+psycopg://api_reader:<API_READER_PASSWORD>@postgres:5432/messages"
            )
            assert env.pop("DATABASE_URL") == (
                "postgresql+psycopg://<secret:messages-db-reader/username>:"
                "<secret:messages-db-reader/password>@postgres:5432/messages"
            )
        helpers = {k for k in env if k.startswith("DB_")}
        assert {k: v for k, v in env.items() if k not in helpers} == compose, name


def test_base_keeps_compose_s_otlp_endpoint(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = _environment(rendered["base"], _container(rendered["base"], "Deployment", "api-svc"))
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] == _compose_env("api-svc")["OTEL_EXPORTER_OTLP_ENDPOINT"]
    )


def test_migrate_job_is_compose_s_migrate(kps: list[dict[str, Any]]) -> None:
    job = _find(kps, "Job", "api-svc-migrate")
    container = _pod_spec(job)["containers"][0]
    assert container["command"] == COMPOSE["services"]["migrate"]["command"]
    env = _environment(kps, container)
    compose = _compose_env("migrate")
    assert compose.pop("MIGRATION_DATABASE_URL") == (
        "postgresql+psycopg://messages_owner:<POSTGRES_PASSWORD>@postgres:5432/messages"
    )
    assert env.pop("MIGRATION_DATABASE_URL") == (
        "postgresql+psycopg://<secret:messages-db-owner/username>:"
        "<secret:messages-db-owner/password>@postgres:5432/messages"
    )
    assert (
        env.pop("DATABASE_URL")
        == _environment(kps, _container(kps, "Deployment", "api-svc"))["DATABASE_URL"]
    )
    compose.pop("DATABASE_URL")
    assert {k: v for k, v in env.items() if not k.startswith("DB_")} == compose


def _secret_refs(container: dict[str, Any]) -> set[str]:
    return {
        var["valueFrom"]["secretKeyRef"]["name"]
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }


def test_secrets_come_only_from_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for target, obj in _all(rendered):
        assert obj["kind"] != "Secret", f"{target}: a Secret is rendered (create it in the cluster)"
        if obj["kind"] == "ConfigMap":
            for key in obj.get("data", {}):
                assert not SECRET_NAME.search(key), (target, obj["metadata"]["name"], key)
        if obj["kind"] not in WORKLOADS:
            continue
        for container in _containers(obj):
            assert not container.get("envFrom") or all(
                "secretRef" not in source for source in container["envFrom"]
            )
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), (target, var)
                # A URL with credentials only ever holds them as $(VAR) references.
                if "value" in var and re.search(r"://[^/]*@", var["value"]):
                    assert re.search(r"://\$\(\w+\):\$\(\w+\)@", var["value"]), (target, var)


def test_only_the_migrate_job_and_exporter_hold_the_owner_s_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    owners = set()
    for _, obj in _all(rendered):
        if obj["kind"] in WORKLOADS and any(
            "messages-db-owner" in _secret_refs(c) for c in _containers(obj)
        ):
            owners.add(obj["metadata"]["name"])
    assert owners == {"api-svc-migrate", "postgres-exporter", "postgres"}
    api = _container(rendered["kube-prometheus-stack"], "Deployment", "api-svc")
    assert _secret_refs(api) == {"messages-db-reader"}
    processor = _container(rendered["kube-prometheus-stack"], "Deployment", "processor-svc")
    assert _secret_refs(processor) == set()


def test_postgres_is_optional_and_as_compose_runs_it(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert not [o for o in rendered["base"] if o["kind"] == "StatefulSet"]
    assert not [o for o in rendered["kube-prometheus-stack"] if o["kind"] == "StatefulSet"]
    postgres = _container(rendered["local"], "StatefulSet", "postgres")
    assert postgres["args"] == COMPOSE["services"]["postgres"]["command"]
    _find(rendered["local"], "Service", "postgres")
    db = _configmap(rendered["local"], "messages-db")["data"]
    assert (db["host"], db["port"], db["database"]) == ("postgres", "5432", "messages")


# --------------------------------------------------------------------------- monitoring


def test_service_monitors_scrape_what_prometheus_yml_scrapes(kps: list[dict[str, Any]]) -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS_CONFIG["scrape_configs"]}
    monitors = [o for o in kps if o["kind"] == "ServiceMonitor"]
    seen = {}
    for monitor in monitors:
        (endpoint,) = monitor["spec"]["endpoints"]
        (relabel,) = endpoint["relabelings"]
        assert (relabel["targetLabel"], relabel["action"]) == ("job", "replace")
        job = relabel["replacement"]
        assert job in jobs, job
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        services = [
            o for o in kps if o["kind"] == "Service" and selector <= o["metadata"]["labels"].items()
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        ports = {p["name"]: p["port"] for p in services[0]["spec"]["ports"]}
        target_port = int(jobs[job]["static_configs"][0]["targets"][0].rsplit(":", 1)[1])
        assert ports[endpoint["port"]] == target_port, job
        if "scrape_interval" in jobs[job]:
            assert endpoint["interval"] == jobs[job]["scrape_interval"], job
        seen[job] = target_port
    assert seen == {"api-svc": 9000, "processor-svc": 9001, "nginx": 9113, "postgres": 9187}
    for name, port in (("api-svc", 9000), ("processor-svc", 9001)):
        env = _environment(kps, _container(kps, "Deployment", name))
        assert env["METRICS_PORT"] == str(port)


def test_the_nginx_exporter_reads_the_status_listener(kps: list[dict[str, Any]]) -> None:
    gateway = _find(kps, "Deployment", "gateway")
    exporter = next(c for c in _pod_spec(gateway)["containers"] if c["name"] == "nginx-exporter")
    assert exporter["args"] == ["--nginx.scrape-uri=http://127.0.0.1:8081/stub_status"]
    assert "listen 8081;" in _gateway_files(kps)["conf.d/40-status.conf"]


def test_helm_values_name_the_dashboard_s_data_sources() -> None:
    values = yaml.safe_load(
        (ROOT / "deploy/kubernetes/helm-values/kube-prometheus-stack.yaml").read_text()
    )
    grafana = values["grafana"]
    assert grafana["sidecar"]["dashboards"]["label"] == "grafana_dashboard"
    assert grafana["sidecar"]["dashboards"]["labelValue"] == "1"
    uids = {grafana["sidecar"]["datasources"]["uid"]}
    uids |= {source["uid"] for source in grafana["additionalDataSources"]}
    used = set(_datasource_uids(json.loads(DASHBOARD.read_text()))) - {"-- Grafana --"}
    assert used == {"prometheus", "loki", "tempo"}
    assert used <= uids, used - uids


def _datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source:
            yield source["uid"]
        for value in node.values():
            yield from _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_uids(value)
