"""docs/openapi.yaml: what the generator makes from config/, a valid OpenAPI 3.1 document, and
true to the code (every header a provider signs with, every reason the ingress answers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from router import errors
from router.app import _HTTP_REASONS
from router.cli import main
from router.openapi import REASONS, SCHEME_HEADERS, openapi_document, render_yaml
from router.providers import signed_headers
from router.settings import load_settings
from router.verify import SCHEMES

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "router.toml"
COMMITTED = ROOT / "docs" / "openapi.yaml"


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi_document(load_settings(CONFIG, environ={}, resolve_secrets=False))


class TestDocument:
    def test_committed_file_is_what_the_config_makes(self, document):
        """docs/openapi.yaml cannot drift: regenerate it with `webhook-router openapi -o
        docs/openapi.yaml` after changing config/ or router/openapi.py."""
        assert render_yaml(document) == COMMITTED.read_text()

    def test_it_is_a_valid_openapi_document(self):
        """The committed file passes the OpenAPI 3.1 validator."""
        validate(yaml.safe_load(COMMITTED.read_text()))

    def test_the_command_prints_it_without_any_secret(self, capsys):
        """`webhook-router openapi` needs no webhook secret in the environment."""
        assert 0 == main(["openapi", "--config", str(CONFIG)])
        assert COMMITTED.read_text() == capsys.readouterr().out

    def test_every_source_and_probe_is_described(self, document):
        """Each configured source's path is a POST; the probes and operator reads are GETs."""
        settings = load_settings(CONFIG, environ={}, resolve_secrets=False)
        expected = {s.path: ["post"] for s in settings.sources.values()}
        expected.update({"/healthz": ["get"], "/readyz": ["get"], "/metrics": ["get"],
                         "/rejections": ["get"]})
        assert expected == {path: list(item) for path, item in document["paths"].items()}


class TestTrueToTheCode:
    def test_every_scheme_has_its_headers(self):
        """A new verification scheme must say which headers it reads."""
        assert set(SCHEMES) == set(SCHEME_HEADERS)

    @pytest.mark.parametrize("source", sorted(load_settings(
        CONFIG, environ={}, resolve_secrets=False).sources))
    def test_every_header_a_provider_sends_is_described(self, document, source, test_env):
        """What `sign` sends for each source (signature, timestamp, topic, delivery id, time)
        is a header parameter of its operation, or its security scheme."""
        settings = load_settings(CONFIG, environ=test_env)
        operation = document["paths"][settings.sources[source].path]["post"]
        described = {p["name"].lower() for p in operation["parameters"]}
        schemes = document["components"]["securitySchemes"]
        for requirement in operation.get("security", []):
            for name in requirement:
                scheme = schemes[name]
                described.add(scheme.get("name", "Authorization").lower())
        sent = signed_headers(settings, source, b"{}", None)
        assert set() == {h.lower() for h in sent} - described - {"content-type"}

    def test_every_reason_the_ingress_gives_is_listed_under_its_status(self):
        """Each `reason="..."` passed to an ingress error in router/ (and each the middleware
        gives) is in the document's list for that error's status."""
        statuses = {cls.__name__: cls.status for cls in vars(errors).values()
                    if isinstance(cls, type) and issubclass(cls, errors.IngressError)}
        statuses["check"] = errors.InvalidPayload.status  # SchemaRegistry.check
        missing = []
        for path in sorted((ROOT / "router").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                for keyword in node.keywords:
                    if (keyword.arg == "reason" and name in statuses
                            and isinstance(keyword.value, ast.Constant)
                            and keyword.value.value not in REASONS[statuses[name]]):
                        missing.append((path.name, node.lineno, keyword.value.value))
        for status, reason in _HTTP_REASONS.items():
            if reason not in REASONS[status]:
                missing.append(("app.py", status, reason))
        assert [] == missing
