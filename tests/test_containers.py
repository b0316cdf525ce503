"""Static checks of the Dockerfile and docker-compose.yml (there is no Docker engine here).

The compose file parses; every service command is a real `deeprec` subcommand (parsed by the CLI's
own argparse parser); every DEEPREC_* variable is a Settings field; volumes and depends_on agree;
the Dockerfile has the instructions the deployment relies on.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.cli import build_parser
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEEPREC_SERVICES = {"init", "api", "worker", "api-gpu", "worker-gpu"}
MODELS_MOUNT = "/app/models_store"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def commands(service: dict[str, Any]) -> list[list[str]]:
    """The deeprec invocations of a service: its argv, or each `&&` step of a `sh -c` script."""
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(step) for step in argv[2].split("&&")]
    return [argv]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_topology(compose) -> None:
    assert {"postgres", "init", "api", "worker"} <= set(compose["services"])
    assert set(compose["services"]) - {"postgres"} == DEEPREC_SERVICES
    assert {"models_store", "pgdata"} <= set(compose["volumes"])


def test_every_command_is_a_real_deeprec_subcommand(compose) -> None:
    seen = set()
    for name in DEEPREC_SERVICES:
        for argv in commands(compose["services"][name]):
            assert argv[0] == "deeprec", f"{name}: {argv}"
            try:
                args = build_parser(argv[1]).parse_args(argv[1:])
            except SystemExit as e:  # argparse exits on unknown commands and flags
                raise AssertionError(f"{name}: `{shlex.join(argv)}` is not a valid deeprec command") from e
            assert callable(args.func)
            seen.add(argv[1] if argv[1] != "db" else f"db {argv[2]}")
    assert {"db upgrade", "demo-data", "train", "serve", "worker"} <= seen
    init = [a[1] for a in commands(compose["services"]["init"])]
    assert init == ["db", "demo-data", "train"]  # migrate, data, first version: in that order
    assert commands(compose["services"]["api"])[0][:2] == ["deeprec", "serve"]
    assert commands(compose["services"]["worker"])[0][:2] == ["deeprec", "worker"]


def test_every_deeprec_variable_is_a_setting(compose) -> None:
    fields = {f"DEEPREC_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"\bDEEPREC_[A-Z0-9_]+", COMPOSE.read_text() + DOCKERFILE.read_text()))
    assert used and used <= fields, f"not settings: {sorted(used - fields)}"
    for name in DEEPREC_SERVICES:
        env = env_of(compose["services"][name])
        assert set(env) <= fields
        assert env["DEEPREC_MODELS_DIR"] == MODELS_MOUNT
        url = make_url(env["DEEPREC_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg" and url.host == "postgres"
        pg = env_of(compose["services"]["postgres"])
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
        )  # fmt: skip
    assert env_of(compose["services"]["api"])["DEEPREC_EMBEDDED_WORKER"] == "false"
    assert Settings(_env_file=None, embedded_worker="false").embedded_worker is False  # type: ignore[call-arg]


def test_volumes_and_dependencies_are_consistent(compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "test" in services[dep].get("healthcheck", {}), f"{dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be one-shot"
    assert "models_store:" + MODELS_MOUNT in services["api"]["volumes"]
    for name in DEEPREC_SERVICES:
        assert "models_store:" + MODELS_MOUNT in services[name]["volumes"], name  # one shared store
    for name in ("api", "worker", "api-gpu", "worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["init"]["condition"] == "service_completed_successfully"
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    for name in ("api-gpu", "worker-gpu"):
        assert services[name]["profiles"] == ["gpu"]
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert env_of(services[name])["DEEPREC_DEVICE"] == "cuda"


def test_init_serves_first_and_leaves_the_rest_to_the_worker(compose) -> None:
    """The one-shot init trains only the quick models, with its progress shown, and queues the rest."""
    train = next(argv for argv in commands(compose["services"]["init"]) if argv[1] == "train")
    args = build_parser("train").parse_args(train[1:])
    assert args.quick_first and args.if_missing and not args.quiet
    assert "worker" in compose["services"] and "DEEPREC_EMBEDDED_WORKER" not in env_of(compose["services"]["worker"])


def test_gpu_services_have_their_own_cuda_image(compose) -> None:
    services = compose["services"]
    for name in ("init", "api", "worker"):
        assert services[name]["image"] == "deeprec:latest"
        assert "whl/cpu" in services[name]["build"]["args"]["TORCH_INDEX_URL"]
    for name in ("api-gpu", "worker-gpu"):
        image, build = services[name]["image"], services[name]["build"]
        assert image != "deeprec:latest" and image.startswith("deeprec:"), image
        assert re.search(r"whl/cu\d+", build["args"]["TORCH_INDEX_URL"])
        assert "cuda" in build["args"]["BASE_IMAGE"]
        assert build["context"] == "."
    dockerfile_args = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.M))
    for service in services.values():
        assert set((service.get("build") or {}).get("args", {})) <= dockerfile_args


def test_the_readme_names_the_compose_version(compose) -> None:
    assert compose["name"] == "deeprec"  # Compose v2 only: v1 refuses the top-level name
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"Compose v2", readme)


def test_dockerfile_has_the_required_instructions() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    instr = [ln.split()[0].upper() for ln in lines]
    assert instr.count("FROM") >= 3  # base, build, runtime: multi-stage
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, re.M)  # slim default, CUDA by build arg
    assert "COPY --from=build" in text
    joined = text.replace("\\\n", " ")
    assert re.search(r"pip install [^\n]*-c requirements\.lock[^\n]*torch==", joined)  # torch at the locked version
    assert "pip install --no-deps -r requirements.lock" in text  # then exactly the locked packages
    assert "whl/cpu" in text and "whl/cu" in text  # CPU wheels by default; how to build for CUDA
    runtime = lines[max(i for i, k in enumerate(instr) if k == "FROM") :]
    users = [ln.split()[1] for ln in runtime if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    health = next(ln for ln in lines if ln.upper().startswith("HEALTHCHECK"))
    assert "/healthz" in health and ":8000/" in health
    assert re.search(r'^VOLUME \["?' + MODELS_MOUNT + r'"?\]', text, re.M)
    assert f"DEEPREC_MODELS_DIR={MODELS_MOUNT}" in text
    cmd = next(ln for ln in reversed(lines) if ln.upper().startswith("CMD"))
    assert '"deeprec", "serve"' in cmd and '"--port", "8000"' in cmd
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "var"} <= set(ignored)
