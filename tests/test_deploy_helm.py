"""Deployment: the Helm chart in helm/rewards, rendered offline by Helm's own engine.

Nothing here needs a cluster, Docker or the network:
- helm-python-sdk (`helm_python`) binds Helm v4's Go SDK: it loads the chart, checks
  values against values.schema.json, renders the templates and runs `helm lint`;
- kubernetes-validate checks every rendered object against the OpenAPI-derived JSON
  schemas of the newest Kubernetes version it ships (strict: unknown fields refused).

The chart is rendered for its default values and for helm/values-production.yaml.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "rewards"
PRODUCTION_VALUES = ROOT / "helm" / "values-production.yaml"
RELEASE = "rewards"
NAMESPACE = "rewards"

# Settings that are secrets by contract: only ever read through secretKeyRef.
SECRET_ENV = {
    "DATABASE_URL",
    "REDIS_URL",
    "ENCRYPTION_KEY",
    "ENCRYPTION_KEYS",
    "SMPP_PASSWORD",
    "SMS_HTTP_TOKEN",
    "SMS_RECEIPT_SECRET",
    "SMPP_BULK_PASSWORD",
    "SMS_HTTP_BULK_TOKEN",
}
REQUIRED_SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEY"}

# Newest Kubernetes schema set kubernetes-validate ships (1.37 with 1.37.0).
KUBE_VERSION = kubernetes_validate.utils.latest_version()

PROFILES = ["default", "production"]


def _profile_values(profile: str) -> dict[str, Any] | None:
    if profile == "default":
        return None
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def render(values: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Render the chart like `helm template` (install); return (objects, NOTES.txt)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["_template"] = path
                objects.append(doc)
    return objects, notes


@functools.cache
def _rendered_cached(profile: str) -> tuple[tuple[dict[str, Any], ...], str]:
    objects, notes = render(_profile_values(profile))
    return tuple(objects), notes


def rendered(profile: str) -> list[dict[str, Any]]:
    return list(_rendered_cached(profile)[0])


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def deployment(objects: list[dict[str, Any]], comp: str) -> dict[str, Any]:
    (dep,) = [d for d in of_kind(objects, "Deployment") if component(d) == comp]
    return dep


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    ]


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def config_map(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings ConfigMap (the other one holds the Grafana dashboard)."""
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    return cm


# The Prometheus Operator's kinds: not in Kubernetes' schemas; the tests below check them instead
# (promtool for the rules, the selectors and ports for the ServiceMonitor).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("profile", PROFILES)
def test_values_pass_the_chart_schema(profile: str) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(_profile_values(profile))


@pytest.mark.parametrize(
    "bad_values",
    [
        pytest.param({"config": {"ENCRYPTION_KEY": "c2VjcmV0"}}, id="secret-in-configmap"),
        pytest.param({"config": {"DATABASE_URL": "postgresql://u:p@db/rewards"}}, id="db-url-in-configmap"),
        pytest.param(
            {"secrets": {"env": {"SMPP_PASSWORD": {"key": "smpp-password", "value": "hunter2"}}}},
            id="literal-secret-value",
        ),
        # (an override of an existing entry keeps the default's key: values are merged)
        pytest.param(
            {"secrets": {"env": {"SMS_EXTRA_TOKEN": {"existingSecret": "x"}}}}, id="reference-without-key"
        ),
        pytest.param({"config": {"SMS_PROVIDER": "carrier-pigeon"}}, id="unknown-sms-provider"),
        pytest.param({"api": {"autoscaling": {"maxReplicas": "many"}}}, id="hpa-bounds-type"),
        pytest.param(
            {"metrics": {"prometheusRule": {"enabled": True, "alerts": {"outboxLagSecond": 60}}}},
            id="misspelt-alert-threshold",
        ),
        pytest.param({"metrics": {"prometheusRule": {"alerts": {"smsFailureRatio": 5}}}}, id="ratio-above-1"),
    ],
)
def test_schema_refuses_plaintext_secrets_and_bad_values(bad_values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad_values)


def test_values_files_hold_only_secret_references() -> None:
    """values.yaml and values-production.yaml: every secrets.env entry is a reference."""
    for path in (CHART / "values.yaml", PRODUCTION_VALUES):
        values = yaml.safe_load(path.read_text())
        for name, ref in values.get("secrets", {}).get("env", {}).items():
            assert set(ref) <= {"existingSecret", "key", "optional"}, (path.name, name, ref)
        assert not SECRET_ENV & set(values.get("config", {})), path.name


# ----------------------------------------------------------------- lint + k8s schema


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_strict_is_clean(profile: str) -> None:
    report = helm.lint(
        CHART, _profile_values(profile), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # 1 = info (e.g. "icon is recommended"); warnings (2) and errors (3) are not accepted.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_kubernetes_schemas_are_current() -> None:
    major, minor = (int(p) for p in KUBE_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), KUBE_VERSION


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_object_is_valid_kubernetes(profile: str) -> None:
    objects = rendered(profile)
    assert objects
    for obj in objects:
        if obj["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(strip(obj), KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - failure detail
            pytest.fail(f"{obj['_template']}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_kubernetes_validation_is_not_a_no_op() -> None:
    dep = strip(deployment(rendered("default"), "api"))
    dep["spec"] = dict(dep["spec"], replicas="two")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)
    dep = strip(deployment(rendered("default"), "api"))
    dep["spec"] = dict(dep["spec"], replicaz=2)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)


# ------------------------------------------------------------------------ workloads


@pytest.mark.parametrize("profile", PROFILES)
def test_two_deployments_api_and_worker(profile: str) -> None:
    objects = rendered(profile)
    deps = of_kind(objects, "Deployment")
    assert sorted(component(d) for d in deps) == ["api", "worker"]
    api, worker = deployment(objects, "api"), deployment(objects, "worker")
    assert api["metadata"]["name"] != worker["metadata"]["name"]
    # Each Deployment selects only its own pods.
    for dep, other in ((api, worker), (worker, api)):
        sel = dep["spec"]["selector"]["matchLabels"]
        assert labels_match(sel, dep["spec"]["template"]["metadata"]["labels"])
        assert not labels_match(sel, other["spec"]["template"]["metadata"]["labels"])
    (api_c,) = api["spec"]["template"]["spec"]["containers"]
    (worker_c,) = worker["spec"]["template"]["spec"]["containers"]
    assert api_c["command"] == ["rewards"] and api_c["args"][0] == "api"
    assert worker_c["command"] == ["rewards"] and worker_c["args"][0] == "worker"
    assert "--processes" in worker_c["args"] and "--threads" in worker_c["args"]
    # Separate resources for the two roles.
    assert api_c["resources"]["requests"]["cpu"] and worker_c["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("profile", PROFILES)
def test_api_probes_use_healthz_and_readyz(profile: str) -> None:
    api = deployment(rendered(profile), "api")
    (c,) = api["spec"]["template"]["spec"]["containers"]
    (port,) = c["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8000
    assert c["args"][c["args"].index("--port") + 1] == "8000"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Metrics are scraped from the API pods.
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get("prometheus.io/path") == "/metrics"


@pytest.mark.parametrize("profile", PROFILES)
def test_worker_probes_use_healthz_and_readyz_on_the_metrics_port(profile: str) -> None:
    worker = deployment(rendered(profile), "worker")
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in c.get("ports", [])] == ["metrics"]  # the exporter; no API
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("role", ["api", "worker"])
def test_liveness_is_separate_from_readiness(profile: str, role: str) -> None:
    """Liveness never asks about the dependencies (an outage of PostgreSQL or Redis must not restart
    healthy pods); readiness does, and gives up sooner than liveness would."""
    (c,) = deployment(rendered(profile), role)["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" != c["readinessProbe"]["httpGet"]["path"]
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert (
        ready["periodSeconds"] * ready["failureThreshold"] <= live["periodSeconds"] * live["failureThreshold"]
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_migration_job_is_a_pre_install_pre_upgrade_hook(profile: str) -> None:
    objects = rendered(profile)
    (job,) = of_kind(objects, "Job")
    ann = job["metadata"]["annotations"]
    assert set(ann["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert int(ann["helm.sh/hook-weight"]) < 0
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == ["rewards"] and c["args"] == ["migrate"]
    # A pre-install hook runs before the chart's ConfigMap exists: settings are inlined.
    assert "envFrom" not in c
    env = {e["name"]: e for e in c["env"]}
    configmap = config_map(objects)
    for key, value in configmap["data"].items():
        assert env[key].get("value") == value
    # Only the Job is a hook: Deployments/Services are ordinary release resources.
    hooks = [o for o in objects if "helm.sh/hook" in o["metadata"]["annotations"]]
    assert hooks == [job]


def test_migration_job_can_apply_a_catalog_after_migrating() -> None:
    objects, _ = render({"migrations": {"catalogPath": "/app/catalog/demo"}})
    (job,) = of_kind(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in pod["containers"]] == [["catalog", "apply", "/app/catalog/demo"]]
    for obj in objects:
        kubernetes_validate.validate(strip(obj), KUBE_VERSION, strict=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_hpa_autoscaling_v2_for_api_and_worker(profile: str) -> None:
    objects = rendered(profile)
    values = helm_merged_values(profile)
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert sorted(component(h) for h in hpas) == ["api", "worker"]
    for hpa in hpas:
        comp = component(hpa)
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        dep = deployment(objects, comp)
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        want = values[comp]["autoscaling"]
        assert hpa["spec"]["minReplicas"] == want["minReplicas"] >= 2
        assert hpa["spec"]["maxReplicas"] == want["maxReplicas"] > want["minReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {
            "type": "Utilization",
            "averageUtilization": want["targetCPUUtilizationPercentage"],
        }
        # CPU utilisation is relative to requests: they must be set.
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["requests"]["cpu"]
        # The HPA owns the replica count; a fixed one would fight it on every upgrade.
        assert "replicas" not in dep["spec"]


def test_fixed_replicas_when_autoscaling_is_off() -> None:
    objects, _ = render(
        {
            "api": {"autoscaling": {"enabled": False}},
            "worker": {"autoscaling": {"enabled": False}, "replicaCount": 3},
        }
    )
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    assert deployment(objects, "api")["spec"]["replicas"] == 2
    assert deployment(objects, "worker")["spec"]["replicas"] == 3


@pytest.mark.parametrize("profile", PROFILES)
def test_pod_disruption_budgets_cover_each_deployment(profile: str) -> None:
    objects = rendered(profile)
    pdbs = of_kind(objects, "PodDisruptionBudget")
    assert sorted(component(p) for p in pdbs) == ["api", "worker"]
    for pdb in pdbs:
        assert pdb["apiVersion"] == "policy/v1"
        spec = pdb["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec)
        own = deployment(objects, component(pdb))
        other = deployment(objects, "worker" if component(pdb) == "api" else "api")
        sel = spec["selector"]["matchLabels"]
        assert labels_match(sel, own["spec"]["template"]["metadata"]["labels"])
        assert not labels_match(sel, other["spec"]["template"]["metadata"]["labels"])
        if "minAvailable" in spec:
            # Never a budget that blocks every voluntary eviction.
            assert (
                spec["minAvailable"]
                < helm_merged_values(profile)[component(pdb)]["autoscaling"]["minReplicas"]
            )


@pytest.mark.parametrize("profile", PROFILES)
def test_service_routes_to_api_pods_only(profile: str) -> None:
    objects = rendered(profile)
    (svc,) = [s for s in of_kind(objects, "Service") if component(s) == "api"]
    sel = svc["spec"]["selector"]
    assert labels_match(sel, deployment(objects, "api")["spec"]["template"]["metadata"]["labels"])
    assert not labels_match(sel, deployment(objects, "worker")["spec"]["template"]["metadata"]["labels"])
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "http"


def test_ingress_disabled_by_default_enabled_with_tls_in_production() -> None:
    assert of_kind(rendered("default"), "Ingress") == []
    objects = rendered("production")
    (ing,) = of_kind(objects, "Ingress")
    (svc,) = [s for s in of_kind(objects, "Service") if component(s) == "api"]
    rule_hosts = {r["host"] for r in ing["spec"]["rules"]}
    tls_hosts = {h for t in ing["spec"]["tls"] for h in t["hosts"]}
    assert rule_hosts and rule_hosts <= tls_hosts
    assert all(t["secretName"] for t in ing["spec"]["tls"])
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": svc["metadata"]["name"], "port": {"name": "http"}}


# -------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("profile", PROFILES)
def test_no_plaintext_secret_values(profile: str) -> None:
    objects = rendered(profile)
    # The chart never creates a Secret: it only references existing ones.
    assert of_kind(objects, "Secret") == []
    configmap = config_map(objects)
    assert not SECRET_ENV & set(configmap["data"]), "secret settings must not be in the ConfigMap"
    for where, pod in pod_specs(objects):
        for c in all_containers(pod):
            env = {e["name"]: e for e in c.get("env", [])}
            assert REQUIRED_SECRET_ENV <= set(env), (where, c["name"])
            for name in SECRET_ENV & set(env):
                entry = env[name]
                assert "value" not in entry, (where, name)
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] and ref["key"], (where, name)
            for name in REQUIRED_SECRET_ENV:
                assert not env[name]["valueFrom"]["secretKeyRef"].get("optional", False), (where, name)
            for ef in c.get("envFrom", []):
                assert "secretRef" not in ef and "configMapRef" in ef


# ------------------------------------------------------------------------- security


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_non_root_with_read_only_root_filesystem(profile: str) -> None:
    objects = rendered(profile)
    data_dir = config_map(objects)["data"]["REWARDS_DATA_DIR"]
    for where, pod in pod_specs(objects):
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in all_containers(pod):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            # Writable places for a read-only root: the data dir and /tmp, both emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert {data_dir, "/tmp"} <= set(mounts), (where, c["name"])
            assert all("emptyDir" in volumes[mounts[p]] for p in (data_dir, "/tmp"))


# ----------------------------------------------------------------------- production


def helm_merged_values(profile: str) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(_profile_values(profile))


def test_production_profile_scales_out_and_uses_smpp() -> None:
    default, prod = rendered("default"), rendered("production")
    cm = config_map(prod)
    assert cm["data"]["SMS_PROVIDER"] == "smpp" and cm["data"]["SMPP_HOST"]
    hpa = {component(h): h["spec"] for h in of_kind(prod, "HorizontalPodAutoscaler")}
    hpa_default = {component(h): h["spec"] for h in of_kind(default, "HorizontalPodAutoscaler")}
    for comp in ("api", "worker"):
        assert hpa[comp]["minReplicas"] > hpa_default[comp]["minReplicas"]
        assert hpa[comp]["maxReplicas"] > hpa_default[comp]["maxReplicas"]
        c = deployment(prod, comp)["spec"]["template"]["spec"]["containers"][0]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    for where, pod in pod_specs(prod):
        for c in all_containers(pod):
            assert not c["image"].startswith("rewards:"), where  # a registry image, not the local tag
            assert c["image"].rsplit(":", 1)[1] != "latest", where


def test_notes_name_the_secrets_to_create() -> None:
    notes = _rendered_cached("production")[1]
    for name in REQUIRED_SECRET_ENV:
        assert name in notes
    assert "https://rewards.example.com" in notes


def test_chart_settings_are_application_settings() -> None:
    """Every env var the chart sets is a field of service.kit.config.Settings."""
    from service.kit.config import Settings

    known: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        known.add(alias.upper() if isinstance(alias, str) else name.upper())
    for profile in PROFILES:
        for where, pod in pod_specs(rendered(profile)):
            for c in all_containers(pod):
                names = {e["name"] for e in c.get("env", [])}
                unknown = names - known
                assert not unknown, (
                    f"{profile} {where}: not a setting of service.kit.config.Settings: {unknown}"
                )
        cm = config_map(rendered(profile))
        assert set(cm["data"]) <= known, set(cm["data"]) - known


# ------------------------------------------------------------------ monitoring

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; .ci/run installs it with apt-get)",
)
PROMETHEUS_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"


def prometheus_rule(values: dict[str, Any] | None = None) -> dict[str, Any]:
    objects, _ = render(values or {"metrics": {"prometheusRule": {"enabled": True}}})
    (rule,) = of_kind(objects, "PrometheusRule")
    return rule


def rules_file(folder: Path, rule: dict[str, Any]) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file, beside the promtool tests."""
    path = folder / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(PROMETHEUS_TESTS, folder / PROMETHEUS_TESTS.name)
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_names(rule: dict[str, Any]) -> set[str]:
    return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_prometheus_operator_objects_are_off_by_default_and_on_in_production() -> None:
    default, production = rendered("default"), rendered("production")
    assert not OPERATOR_KINDS & {o["kind"] for o in default}
    assert OPERATOR_KINDS <= {o["kind"] for o in production}


def test_the_rules_alert_on_what_an_operator_pages_on() -> None:
    assert alert_names(prometheus_rule()) >= {
        "RewardsOutboxLag",
        "RewardsSmsFailureRate",
        "RewardsSmscNotBound",
        "RewardsStockRunwayLow",
        "RewardsBudgetAlmostSpent",
        "RewardsApiErrors",
        "RewardsApiLatencyP99",
        "RewardsCardLocked",
    }


@needs_promtool
def test_the_alert_rules_pass_promtool_check_rules(tmp_path: Path) -> None:
    path = rules_file(tmp_path, prometheus_rule())
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names(prometheus_rule()))} rules found" in result.stdout


@needs_promtool
def test_every_alert_fires_in_a_promtool_test_case(tmp_path: Path) -> None:
    rule = prometheus_rule()
    rules_file(tmp_path, rule)
    result = promtool("test", "rules", PROMETHEUS_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = yaml.safe_load(PROMETHEUS_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == alert_names(rule)


@needs_promtool
def test_promtool_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The cases are not a no-op: with the outbox lag threshold at 10 minutes the lag case fails."""
    rule = prometheus_rule(
        {"metrics": {"prometheusRule": {"enabled": True, "alerts": {"outboxLagSeconds": 600}}}}
    )
    rules_file(tmp_path, rule)
    result = promtool("test", "rules", PROMETHEUS_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "RewardsOutboxLag" in result.stdout + result.stderr


def test_the_service_monitor_scrapes_the_api_and_the_worker_exporters() -> None:
    objects = rendered("production")
    (monitor,) = of_kind(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]
    (components,) = [
        e["values"] for e in selector["matchExpressions"] if e["key"] == "app.kubernetes.io/component"
    ]
    services = [
        s
        for s in of_kind(objects, "Service")
        if labels_match(selector["matchLabels"], s["metadata"]["labels"]) and component(s) in components
    ]
    scraped = set()
    for endpoint in monitor["spec"]["endpoints"]:
        for svc in services:
            for port in svc["spec"]["ports"]:
                if port["name"] != endpoint["port"]:
                    continue
                pods = deployment(objects, component(svc))
                assert labels_match(svc["spec"]["selector"], pods["spec"]["template"]["metadata"]["labels"])
                (c,) = pods["spec"]["template"]["spec"]["containers"]
                assert port["targetPort"] in {p["name"] for p in c["ports"]}
                scraped.add((component(svc), endpoint["path"]))
    assert scraped == {("api", "/metrics"), ("worker", "/metrics")}
    worker = deployment(objects, "worker")["spec"]["template"]["spec"]["containers"][0]
    assert str(worker["ports"][0]["containerPort"]) == config_map(objects)["data"]["METRICS_PORT"]


def dashboard_json(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    return json.loads(cm["data"]["rewards.json"])


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


@pytest.mark.parametrize("profile", PROFILES)
def test_the_dashboard_ships_in_a_configmap_the_grafana_sidecar_loads(profile: str) -> None:
    objects = rendered(profile)
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = dashboard_json(objects)
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 20
    for expression in expressions:  # each one is PromQL (the parser refuses anything else)
        assert metric_names(expression), expression
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
