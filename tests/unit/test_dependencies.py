"""pyproject.toml declares every package the code imports, each with a plain `>=` floor
(scripts/floors installs the floors and runs the unit tests on them), and constraints.txt
pins all of it for CI, the scripts and the Dockerfile."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# name, [extras], floor, ; marker: the one shape scripts/floors turns into `name==floor`
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)\s*(;.*)?")
# Modules of this repository: the packages, and the test and bench modules imported by name.
OURS = {"router", "consumers", "emulators", "bench", "tests"} | {
    path.stem for folder in ("tests", "bench") for path in (ROOT / folder).rglob("*.py")
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _floors(requirements: list[str]) -> dict[str, str]:
    floors = {}
    for requirement in requirements:
        match = REQUIREMENT.fullmatch(requirement)
        assert match, f"pyproject.toml: {requirement!r} needs one plain >= floor"
        floors[_normalized(match[1])] = match[3]
    return floors


RUNTIME = _floors(PROJECT["dependencies"])
TEST = _floors(PROJECT["optional-dependencies"]["test"])


def _version(text: str) -> tuple[int, ...]:
    """The release part of a version ("1.4.1.post1" -> (1, 4, 1)), enough to compare pins."""
    match = re.match(r"\d+(\.\d+)*", text)
    assert match, text
    return tuple(int(part) for part in match[0].split("."))


def _third_party_imports(folder: str) -> dict[str, set[str]]:
    """Top-level module -> the files under `folder` importing it, for every module that is
    neither the standard library's nor ours."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _undeclared(folders: tuple[str, ...], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for folder in folders:
        for module, files in sorted(_third_party_imports(folder).items()):
            names = {_normalized(d) for d in distributions.get(module, [])}
            if not names & declared:
                provider = ", ".join(sorted(names)) or "no installed distribution"
                problems.append(f"{module} ({provider}) imported by {', '.join(sorted(files))}")
    return problems


class TestDeclaredImports:
    def test_the_service_imports_only_runtime_dependencies(self):
        """router/, consumers/ and emulators/ import nothing beyond the standard library,
        themselves and pyproject.toml's dependencies (a test-only package would be missing in
        production, and the emulators run from the same install)."""
        assert [] == _undeclared(("router", "consumers", "emulators"), set(RUNTIME))

    def test_tests_and_benchmarks_import_only_declared_packages(self):
        """tests/ and bench/ may use the test extra too, but nothing undeclared."""
        assert [] == _undeclared(("tests", "bench"), set(RUNTIME) | set(TEST))

    def test_the_scan_sees_what_it_must(self):
        """The scan finds imports in functions and `from` imports, and skips ours."""
        found = _third_party_imports("router")
        assert {"pamqp", "yarl", "multidict", "cryptography", "jwt"} <= set(found)
        assert "uvloop" in found  # imported inside a function in router/serve.py
        assert not {"router", "consumers", "__future__", "asyncio"} & set(found)


class TestFloors:
    @pytest.mark.parametrize(
        ("name", "floor", "why"),
        [
            ("jsonschema-rs", "0.52", "Draft202012Validator(offline=...)"),
            ("aiohttp", "3.14.4", "web.RequestKey; the request-smuggling fixes"),
            ("pamqp", "4.0", "what aiormq 7 needs"),
            ("pyjwt", "2.10.1", "2.10.0 matched `iss` by substring"),
        ],
    )
    def test_runtime_floor_is_one_that_works(self, name, floor, why):
        """Each floor is at least the first version the code works with (see pyproject)."""
        assert _version(RUNTIME[name]) >= _version(floor), why

    def test_pytest_asyncio_floor_reads_the_loop_scope_setting(self):
        """pytest-asyncio 0.24 is the first to know asyncio_default_fixture_loop_scope."""
        assert _version(TEST["pytest-asyncio"]) >= (0, 24)


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.+!-]+", version), f"not pinned: {line!r}"
            pins[_normalized(name)] = version
    return pins


class TestConstraints:
    def test_every_declared_package_is_pinned_at_or_above_its_floor(self, pins):
        """constraints.txt pins each dependency and test tool, at a version the floor allows."""
        for name, floor in {**RUNTIME, **TEST}.items():
            assert name in pins, f"{name} is not in constraints.txt: run scripts/lock"
            assert _version(pins[name]) >= _version(floor), name

    def test_pins_the_tools_that_build_and_serve(self, pins):
        """pip, setuptools (the build backend), gunicorn and cryptography are pinned too."""
        assert {"pip", "setuptools", "gunicorn", "cryptography"} <= set(pins)

    def test_says_how_to_regenerate_it(self):
        """The header names the one command that writes it."""
        lines = (ROOT / "constraints.txt").read_text().splitlines()
        assert "scripts/lock" in " ".join(line for line in lines if line.startswith("#"))
        assert (ROOT / "scripts" / "lock").stat().st_mode & 0o111

    def test_every_install_goes_through_the_constraints(self):
        """scripts/install (used by scripts/test, scripts/start and so CI) installs with
        -c constraints.txt; nothing else runs pip install on the project."""
        install = (ROOT / "scripts" / "install").read_text()
        assert install.count("pip install") == install.count("-c constraints.txt") == 2
        for script in ("start", "test"):
            text = (ROOT / "scripts" / script).read_text()
            assert "scripts/install" in text and "pip install" not in text, script
        assert "exec scripts/test" in (ROOT / ".ci" / "run").read_text()

    def test_ci_checks_the_floors(self):
        """CI runs scripts/floors, so a floor that stops working fails the build."""
        ci = (ROOT / ".ci" / "run").read_text()
        assert "\nscripts/floors\n" in ci
        assert ci.index("scripts/floors") < ci.index("exec scripts/test")
