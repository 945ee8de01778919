"""compose.yaml cannot run here (no Docker engine), so it is checked against the code."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from router.app import create_app
from router.cli import build_parser
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def secret_env_names() -> set[str]:
    with (ROOT / "config" / "router.toml").open("rb") as fh:
        sources = tomllib.load(fh)["sources"]
    refs = [ref for source in sources.values() for ref in source.get("secrets", [])]
    return {ref.removeprefix("env:") for ref in refs if ref.startswith("env:")}


class TestCompose:
    def test_services(self, compose):
        """RabbitMQ with management, PostgreSQL and the ingress are all there."""
        assert {"rabbitmq", "postgres", "ingress"} <= set(compose["services"])
        assert "management" in compose["services"]["rabbitmq"]["image"]
        assert "15672:15672" in compose["services"]["rabbitmq"]["ports"]

    def test_every_service_has_a_health_check(self, compose):
        """Each service declares a health check, so depends_on can wait for it."""
        for name, service in compose["services"].items():
            assert "healthcheck" in service, name

    def test_ingress_command_parses_and_port_matches(self, compose):
        """The ingress command is a valid `python -m router` command on the published port."""
        ingress = compose["services"]["ingress"]
        command = ingress["command"]
        assert ["python", "-m", "router"] == command[:3]
        args = build_parser().parse_args(command[3:])
        assert "serve" == args.command
        published = {p.split(":")[1] for p in ingress["ports"]}
        assert {str(args.port)} == published
        assert f":{args.port}/readyz" in " ".join(ingress["healthcheck"]["test"])

    def test_ingress_environment_has_every_secret_and_the_broker(self, compose, secret_env_names):
        """Every env: secret named in router.toml is passed to the ingress, and AMQP_URL points
        at the rabbitmq service."""
        env = compose["services"]["ingress"]["environment"]
        assert secret_env_names
        assert secret_env_names <= set(env)
        assert "@rabbitmq:5672/" in env["AMQP_URL"]
        assert "/app/config/router.toml" == env["ROUTER_CONFIG"]

    def test_health_check_path_is_served(self, test_env):
        """The path the health check asks for is a route of the app."""
        settings = load_settings(ROOT / "config" / "router.toml", environ=test_env)
        app = create_app(settings)
        paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
        assert {"/readyz", "/healthz", "/metrics"} <= paths

    def test_grace_period_covers_shutdown_timeout(self, compose, test_env):
        """Docker waits longer than the ingress takes to finish in-flight requests."""
        settings = load_settings(ROOT / "config" / "router.toml", environ=test_env)
        grace = int(compose["services"]["ingress"]["stop_grace_period"].rstrip("s"))
        assert grace > settings.server.shutdown_timeout

    def test_dockerfile_copies_what_exists(self):
        """Every path the Dockerfile copies is in the repository."""
        for line in (ROOT / "Dockerfile").read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), src


class TestConsumerServices:
    def test_one_service_per_consumer_with_a_valid_command(self, compose):
        """Each consumer has its own service (scalable), running `python -m consumers NAME`."""
        from consumers.cli import CONSUMERS
        from consumers.cli import build_parser as consumer_parser

        for name in [*CONSUMERS, "notifications"]:
            service = compose["services"][name]
            assert ["python", "-m", "consumers"] == service["command"][:3]
            args = consumer_parser().parse_args(service["command"][3:])
            assert name == args.name
            assert f":{args.metrics_port}/metrics" in " ".join(service["healthcheck"]["test"])
            assert service["environment"]["DATABASE_URL"].startswith("postgresql://")
            assert "@postgres:5432/" in service["environment"]["DATABASE_URL"]
            assert "container_name" not in service  # --scale needs generated names
