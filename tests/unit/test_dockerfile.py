"""The Dockerfile cannot be built here (no Docker engine), so its rules are checked on the
text: two stages, the pinned versions, an unprivileged user, a command the code accepts, and
a .dockerignore that keeps local environments, secrets and history out of the build."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

from router.cli import build_parser
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        found.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each its instructions from its FROM on."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in _instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            stages.append([])
        assert stages, "the Dockerfile starts with FROM"
        stages[-1].append((keyword, arguments))
    return stages


def _all(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for k, arguments in stage if k == keyword]


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` (or a folder holding it) out of the context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in _dockerignore():
        glob = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], glob)
            ):
                return True
    return False


class TestStages:
    def test_builds_wheels_in_one_stage_and_runs_from_another(self, stages):
        """A named build stage makes wheels; the last stage installs them, no index."""
        assert len(stages) >= 2
        build_from = stages[0][0][1]
        assert re.fullmatch(r"\S+ AS (\w+)", build_from, re.IGNORECASE)
        build_name = build_from.split()[-1]
        assert any("pip wheel" in run for run in _all(stages[0], "RUN"))
        runtime_runs = " ".join(_all(stages[-1], "RUN"))
        assert f"from={build_name}" in runtime_runs
        assert "--no-index" in runtime_runs

    def test_both_stages_install_the_pinned_versions(self, stages):
        """Each pip command in the Dockerfile installs with -c constraints.txt."""
        for stage in (stages[0], stages[-1]):
            commands = [run for run in _all(stage, "RUN") if "pip " in run]
            assert commands
            for command in commands:
                assert re.search(r"-c \S*constraints\.txt", command), command
        assert any("constraints.txt" in copy.split()[:-1] for copy in _all(stages[0], "COPY"))

    def test_the_image_runs_as_an_unprivileged_user(self, stages):
        """The runtime stage ends as a user that is not root, and only root-owned code and
        config are in the image (the user owns nothing but data/)."""
        users = _all(stages[-1], "USER")
        assert users
        user = users[-1].split(":")[0]
        assert user not in ("root", "0")
        assert not any("--chown" in copy for copy in _all(stages[-1], "COPY"))
        last_user = max(i for i, (k, _) in enumerate(stages[-1]) if k == "USER")
        assert "CMD" in {k for k, _ in stages[-1][last_user:]}
        assert any(user in run and ("useradd" in run or "adduser" in run)
                   for run in _all(stages[-1], "RUN"))

    def test_command_config_and_port_are_the_code_s(self, stages, test_env):
        """CMD is a `python -m router` command the CLI accepts, ROUTER_CONFIG is the copied
        config, and EXPOSE is the port the config serves on."""
        command = json.loads(_all(stages[-1], "CMD")[-1])
        assert ["python", "-m", "router"] == command[:3]
        assert "serve" == build_parser().parse_args(command[3:]).command
        env = dict(pair.split("=", 1) for pair in shlex.split(" ".join(_all(stages[-1], "ENV"))))
        assert "/app/config/router.toml" == env["ROUTER_CONFIG"]
        assert any(copy.split() == ["config", "./config"] for copy in _all(stages[-1], "COPY"))
        assert "/app" == _all(stages[-1], "WORKDIR")[-1]
        settings = load_settings(ROOT / "config" / "router.toml", environ=test_env)
        assert [str(settings.server.port)] == _all(stages[-1], "EXPOSE")

    def test_copies_what_exists_and_is_not_ignored(self, stages):
        """Every path a stage copies from the context is in the repository and not left out
        by .dockerignore."""
        for stage in stages:
            for copy in _all(stage, "COPY"):
                sources = [s for s in copy.split()[:-1] if not s.startswith("--")]
                assert not copy.startswith("--from"), copy
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert not _ignored(source), source


class TestDockerignore:
    @pytest.mark.parametrize(
        "path",
        [".git", ".venv", ".env", ".env.local", ".env.example", "router/__pycache__",
         "tests/unit/__pycache__/test_x.cpython-311.pyc", ".pytest_cache", ".ruff_cache",
         ".mypy_cache", "webhook_router.egg-info", "data/router.sqlite3", "bench/results"],
    )
    def test_leaves_out(self, path):
        """Local environments, secrets, history, caches and data stay out of the context."""
        assert _ignored(path)

    @pytest.mark.parametrize("path", ["router/app.py", "config/router.toml", "constraints.txt"])
    def test_keeps(self, path):
        """What the image is built from stays in."""
        assert not _ignored(path)
