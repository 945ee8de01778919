"""compose.yaml cannot run here (no Docker engine), so it is checked against the code."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from router.app import create_app
from router.cli import build_parser
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _env_refs(tables: dict) -> set[str]:
    refs = [ref for table in tables.values() for ref in table.get("secrets", [])]
    return {ref.removeprefix("env:") for ref in refs if ref.startswith("env:")}


@pytest.fixture(scope="module")
def config() -> dict:
    with (ROOT / "config" / "router.toml").open("rb") as fh:
        return tomllib.load(fh)


@pytest.fixture(scope="module")
def secret_env_names(config) -> set[str]:
    """The environment variables the sources' secrets are read from."""
    return _env_refs(config["sources"])


@pytest.fixture(scope="module")
def subscription_env_names(config) -> set[str]:
    """The environment variables the outbound subscriptions' secrets are read from."""
    return _env_refs(config.get("subscriptions", {}))


@pytest.fixture(scope="module")
def carrier_env_names(config) -> set[str]:
    """The environment variable the labels consumer's carrier key is read from."""
    return _env_refs({"labels": {"secrets": [config["labels"]["api_key"]]}})


def _published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each port a service publishes."""
    found = []
    for port in service.get("ports", []):
        *address, host, container = str(port).split(":")
        found.append((address[0] if address else "0.0.0.0", int(host), int(container)))
    return found


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


# Ports that RabbitMQ (AMQP, TLS, management, Erlang distribution, epmd), PostgreSQL (and a
# second Debian cluster) and `scripts/start` (the config's port) take on a developer's machine.
LOCAL_PORTS = {5672, 5671, 15672, 25672, 4369, 5432, 5433}


class TestCompose:
    def test_services(self, compose):
        """RabbitMQ with management, PostgreSQL and the ingress are all there."""
        assert {"rabbitmq", "postgres", "ingress"} <= set(compose["services"])
        assert "management" in compose["services"]["rabbitmq"]["image"]
        assert [("127.0.0.1", 15673, 15672)] == _published(compose["services"]["rabbitmq"])

    def test_rabbitmq_image_is_a_supported_release_line(self, compose):
        """RabbitMQ 4.x (3.x, 3.13 included, is out of community support), management tag."""
        image = compose["services"]["rabbitmq"]["image"]
        assert re.fullmatch(r"rabbitmq:4(\.\d+){0,2}-management", image), image

    def test_host_ports_do_not_clash_with_local_services(self, compose, test_env):
        """Nothing is published on a port a local RabbitMQ, PostgreSQL or `scripts/start`
        holds; the broker and the database publish nothing but the management UI, on the
        loopback address."""
        settings = load_settings(ROOT / "config" / "router.toml", environ=test_env)
        taken = LOCAL_PORTS | {settings.server.port}
        host_ports = []
        for name, service in compose["services"].items():
            for address, host, _ in _published(service):
                assert host not in taken, (name, host)
                if name in ("rabbitmq", "postgres"):
                    assert "127.0.0.1" == address, name
                host_ports.append(host)
        assert len(set(host_ports)) == len(host_ports)
        assert [] == _published(compose["services"]["postgres"])

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
        assert {args.port} == {container for _, _, container in _published(ingress)}
        assert f":{args.port}/readyz" in " ".join(ingress["healthcheck"]["test"])

    def test_ingress_environment_has_the_broker_and_secrets_from_env_local(self, compose):
        """The ingress reads its secrets from .env.local, and AMQP_URL points at the rabbitmq
        service."""
        ingress = compose["services"]["ingress"]
        assert ".env.local" == ingress["env_file"]
        assert "@rabbitmq:5672/" in ingress["environment"]["AMQP_URL"]
        assert "/app/config/router.toml" == ingress["environment"]["ROUTER_CONFIG"]

    def test_secrets_come_from_env_local_only(self, compose, secret_env_names,
                                              subscription_env_names, carrier_env_names):
        """No secret the config reads is set or interpolated in compose.yaml: the services
        that need them (the ingress the sources', notifications the subscriptions', labels
        the carrier's key) get them from .env.local; the others get none."""
        text = (ROOT / "compose.yaml").read_text()
        assert secret_env_names and subscription_env_names and carrier_env_names
        for name in secret_env_names | subscription_env_names | carrier_env_names:
            assert not re.search(rf"\b{name}\s*:", text), name
            assert "${" + name not in text, name
        needing = {"ingress", "notifications", "labels", "storefront"}
        for name, service in compose["services"].items():
            assert (".env.local" == service.get("env_file")) == (name in needing), name

    def test_env_example_names_every_secret_and_holds_none(self, secret_env_names,
                                                           subscription_env_names,
                                                           carrier_env_names):
        """.env.example (committed) lists every env: secret of router.toml, all empty."""
        example = _env_example()
        assert secret_env_names | subscription_env_names | carrier_env_names == set(example)
        assert {""} == set(example.values())

    def test_env_local_is_never_committed_or_sent_to_docker(self):
        """.gitignore and .dockerignore both leave .env.local out (and .env.example is kept in
        git)."""
        for ignore in (".gitignore", ".dockerignore"):
            patterns = [line.strip() for line in (ROOT / ignore).read_text().splitlines()]
            assert any(fnmatch.fnmatch(".env.local", p) for p in patterns), ignore
        assert "!.env.example" in (ROOT / ".gitignore").read_text().splitlines()

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


CLUSTER_MEMBERS = ("rabbitmq-2", "rabbitmq-3")


class TestCluster:
    def test_two_more_nodes_join_rabbitmq_in_the_cluster_profile(self, compose):
        """rabbitmq-2 and rabbitmq-3 (profile `cluster`) run rabbitmq's image with its
        Erlang cookie, under fixed host names (their node names), publish nothing, and join
        rabbit@rabbitmq at their first start."""
        services = compose["services"]
        first = services["rabbitmq"]
        assert "rabbitmq" == first["hostname"]
        join = compose["configs"]["rabbitmq-join"]["content"]
        assert "cluster_formation.classic_config.nodes.1 = rabbit@rabbitmq\n" in join
        for name in CLUSTER_MEMBERS:
            node = services[name]
            assert (["cluster"], name) == (node["profiles"], node["hostname"])
            assert (first["image"], first["environment"]) == (node["image"], node["environment"])
            assert [] == _published(node)
            assert ["rabbitmq-join"] == [config["source"] for config in node["configs"]]

    def test_broker_urls_name_the_three_nodes(self, compose, test_env):
        """Every service's AMQP_URL is BROKER_URLS, by default the one broker; the
        BROKER_URLS the header gives loads as the three nodes' addresses."""
        for name, service in compose["services"].items():
            if "AMQP_URL" in service.get("environment", {}):
                assert ("${BROKER_URLS:-amqp://guest:guest@rabbitmq:5672/}"
                        == service["environment"]["AMQP_URL"]), name
        header = (ROOT / "compose.yaml").read_text()
        urls = re.search(r"BROKER_URLS=(\S+)", header)
        assert urls is not None
        broker = load_settings(ROOT / "config" / "router.toml",
                               environ={**test_env, "AMQP_URL": urls[1]}).broker
        hosts = [urlsplit(url).hostname for url in broker.addresses]
        assert ["rabbitmq", *CLUSTER_MEMBERS] == hosts


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

    def test_the_labels_service_starts_only_when_asked(self, compose):
        """[labels] is off by default: its service is in a profile of its own (`docker
        compose --profile labels up` once [labels] enabled = true and EASYPOST_API_KEY is in
        .env.local), so a plain `up` does not start a consumer that refuses to run."""
        assert ["labels"] == compose["services"]["labels"]["profiles"]
        assert ["storefront"] == compose["services"]["storefront"]["profiles"]
        others = [name for name, service in compose["services"].items()
                  if name not in ("labels", "storefront", *CLUSTER_MEMBERS)]
        assert all("profiles" not in compose["services"][name] for name in others)
