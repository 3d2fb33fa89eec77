"""What can be checked of the Docker image without a Docker engine (none runs on the
development machines; scripts/docker_check.sh builds and runs the image where one does):
every path the Dockerfile copies exists and holds every package pip installs, the command
it runs is the installed `vigil serve`, and its HEALTHCHECK probes a route that answers
without a credential on the port the server listens on."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.settings import Settings
from app.storage import migrate
from tests.conftest import REPO
from vigil.cli import cli
from vigil.server import create_server

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def one(keyword: str) -> str:
    (value,) = [rest for name, rest in instructions() if name == keyword]
    return value


def env() -> dict[str, str]:
    pairs = " ".join(rest for name, rest in instructions() if name == "ENV")
    return dict(part.split("=", 1) for part in shlex.split(pairs))


def copied() -> dict[str, str]:
    """Each copied source → where it lands in the image."""
    workdir = one("WORKDIR")
    landing = {}
    for name, rest in instructions():
        if name == "COPY":
            *sources, target = shlex.split(rest)
            for source in sources:
                if target.endswith("/"):
                    where = Path(workdir, target, Path(source).name)
                else:
                    where = Path(workdir, target)
                landing[source] = str(where.resolve())
    return landing


def test_every_copied_path_exists_and_every_installed_package_is_copied() -> None:
    sources = copied()
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"the Dockerfile copies paths that do not exist: {missing}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    not_copied = [package for package in packages if package not in sources]
    assert not not_copied, f"pip install . needs these packages in the image: {not_copied}"
    # pip builds from pyproject.toml and reads the README it names.
    assert {"pyproject.toml", project["project"]["readme"]} <= set(sources)


def test_the_migrations_and_the_data_are_where_the_settings_say() -> None:
    variables = env()
    settings = Settings(
        migrations_dir=Path(variables["VIGIL_MIGRATIONS_DIR"]),
        data_dir=Path(variables["VIGIL_DATA_DIR"]),
    )
    assert str(settings.migrations_dir) == copied()["alembic"]
    assert json.loads(one("VOLUME")) == [str(settings.data_dir)]
    assert f"--home-dir {settings.data_dir}" in one("RUN")


def test_the_command_is_the_installed_vigil_serve_on_the_exposed_port() -> None:
    command = json.loads(one("CMD"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert command[0] in project["project"]["scripts"]
    assert project["project"]["scripts"][command[0]] == "vigil.cli:main"
    assert command[1] == "serve"
    # The options the image passes are options of `vigil serve`.
    result = CliRunner().invoke(cli, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output
    port = command[command.index("--port") + 1]
    assert one("EXPOSE") == port
    assert f"127.0.0.1:{port}/" in one("HEALTHCHECK")


def test_the_healthcheck_probes_liveness_open_to_all(tmp_path: Path) -> None:
    healthcheck = one("HEALTHCHECK")
    code = shlex.split(healthcheck.split(" CMD ", 1)[1])[2]  # python -c "<code>"
    compile(code, "HEALTHCHECK", "exec")
    (url,) = re.findall(r"'(http://[^']+)'", code)
    path = "/" + url.split("/", 3)[3]
    assert path == "/healthz"
    url = f"sqlite:///{tmp_path / 'vigil.sqlite'}"
    migrate.upgrade(url, REPO / "alembic")
    settings = Settings(database_url=url, data_dir=tmp_path)
    with TestClient(create_server(settings)) as client:
        answer = client.get(path)  # no credential, as Docker calls it
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
