"""Settings load from TOML and fail at start-up naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import ConfigError
from router.secrets import resolve_secret
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "router.toml"


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.toml").write_text("")
    path = tmp_path / "router.toml"
    path.write_text(text)
    return path


SUB = '[subscriptions.portal]\nurl = "https://portal.example.com/hook"\n'
SOURCE = """
[sources.shop]
scheme = "shopify"
secrets = ["env:S1", "env:S2"]
mapping = "m.toml"
[sources.shop.events]
"orders/create" = "order.created"
"""


class TestLoadSettings:
    def test_shipped_config_loads(self, test_env):
        """The shipped router.toml loads with every source and its secrets resolved."""
        settings = load_settings(CONFIG, environ=test_env)
        assert {"shopify", "woocommerce", "portal", "inventory", "easypost", "aftership"} == set(
            settings.sources
        )
        assert (b"shpss_test_0123456789abcdef",) == settings.sources["shopify"].secrets
        assert "/webhooks/shopify" == settings.sources["shopify"].path

    def test_consumer_settings_and_database_url(self, tmp_path):
        """[consumers] sets the store and the batching; DATABASE_URL wins over the file."""
        text = ('[consumers]\nstore = "sqlite:///s.db"\nprefetch = 50\nconcurrency = 2\n'
                "partial_allocation = true\n" + SOURCE)
        env = {"S1": "a", "S2": "b"}
        consumers = load_settings(write_config(tmp_path, text), environ=env).consumers
        assert ("sqlite:///s.db", 50, 2, True) == (
            consumers.store, consumers.prefetch, consumers.concurrency,
            consumers.partial_allocation)
        env["DATABASE_URL"] = "postgresql://u@db/router"
        assert "postgresql://u@db/router" == load_settings(
            write_config(tmp_path, text), environ=env).consumers.store

    def test_subscriptions(self, tmp_path):
        """A subscription matches its event patterns; one switched off needs no secret yet."""
        text = (SUB + 'events = ["shipment.*", "order.allocated"]\nsecrets = ["env:W"]\n'
                '[subscriptions.later]\nurl = "https://later.example.com/h"\n'
                'events = ["*"]\nsecrets = ["env:UNSET"]\nenabled = false\n' + SOURCE)
        env = {"S1": "a", "S2": "b", "W": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        subs = load_settings(write_config(tmp_path, text), environ=env).subscriptions
        portal = subs["portal"]
        assert portal.wants("shipment.updated") and portal.wants("order.allocated")
        assert not portal.wants("order.backordered") and not portal.wants("stock.changed")
        assert (False, ()) == (subs["later"].enabled, subs["later"].secrets)

    def test_providers_hold_and_our_feeds_reject(self, tmp_path):
        """A provider's source holds what it cannot use unless told otherwise; a generic
        scheme (our own feeds) rejects; anything else is a ConfigError naming the key."""
        env = {"S1": "a", "S2": "b"}
        feed = ('[sources.feed]\nscheme = "bearer"\nsecrets = ["env:S1"]\n'
                'mapping = "m.toml"\nevent_type = "order.created"\npath = "/feed"\n')

        def shop(setting: str) -> str:
            return SOURCE.replace('mapping = "m.toml"\n', f'mapping = "m.toml"\n{setting}\n')

        settings = load_settings(write_config(tmp_path, SOURCE + feed), environ=env)
        assert ("hold", "reject") == (settings.sources["shop"].on_invalid,
                                      settings.sources["feed"].on_invalid)
        told = load_settings(write_config(tmp_path, shop('on_invalid = "reject"')), environ=env)
        assert "reject" == told.sources["shop"].on_invalid
        with pytest.raises(ConfigError) as info:
            load_settings(write_config(tmp_path, shop('on_invalid = "drop"')), environ=env)
        assert "sources.shop.on_invalid" == info.value.key

    def test_provider_defaults_fill_identity(self, tmp_path):
        """A shopify source gets Shopify's topic and id headers without naming them."""
        settings = load_settings(write_config(tmp_path, SOURCE), environ={"S1": "a", "S2": "b"})
        shop = settings.sources["shop"]
        assert "X-Shopify-Topic" == shop.topic_header
        assert ("X-Shopify-Event-Id", "X-Shopify-Webhook-Id") == shop.id_headers
        assert (b"a", b"b") == shop.secrets

    @pytest.mark.parametrize(
        ("extra", "key", "problem"),
        [
            ("[server]\nport = 99999\n", "server.port", "between"),
            ("[server]\nprot = 1\n", "server.prot", "unknown setting"),
            ("[server]\nworkers = 0\n", "server.workers", "greater than 0"),
            ('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n', "server.trusted_proxies", "CIDR"),
            ("[server]\nmetrics_port = 8080\n", "server.metrics_port", "differ from port"),
            ("[server]\nmetrics_port = 0\n", "server.metrics_port", "between"),
            ('[server]\nmetrics_allow = ["not-an-ip"]\n', "server.metrics_allow", "CIDR"),
            ("[server]\nmetrics_allow = []\n", "server.metrics_allow", '["0.0.0.0/0", "::/0"]'),
            ("[server]\nrejections_kept = -1\n", "server.rejections_kept", "between 0"),
            ("[server]\nrejections_kept = 10001\n", "server.rejections_kept", "10000"),
            ('[server]\nrejections_kept = "all"\n', "server.rejections_kept", "must be int"),
            ('[broker]\nurl = "http://x"\n', "broker.url", "amqp"),
            ("[broker]\nretry_ladder = []\n", "broker.retry_ladder", "non-empty"),
            ("[broker]\nheartbeat = -1\n", "broker.heartbeat", "0 (off)"),
            ("[broker]\nmax_in_flight = 0\n", "broker.max_in_flight", "greater than 0"),
            ("[broker]\nheld_max_length = 0\n", "broker.held_max_length", "greater than 0"),
            ('[broker]\naudit_max_bytes = "1G"\n', "broker.audit_max_bytes", "must be int"),
            ('[broker]\ncafile = "nowhere.pem"\n', "broker.cafile", "no such file"),
            ('[broker]\nverify = "no"\n', "broker.verify", "bool"),
            (f'[broker]\nkeyfile = "{__file__}"\n', "broker.keyfile", "needs certfile"),
            ('[logging]\nlevel = "loud"\n', "logging.level", "one of"),
            ("[consumers]\nconcurrency = 0\n", "consumers.concurrency", "greater than 0"),
            ('[consumers]\nstore = "mysql://x"\n', "consumers.store", "sqlite"),
            ('[consumers]\npartial_allocation = "yes"\n', "consumers.partial_allocation",
             "bool"),
            ("[consumers]\nunpaid_expiry = -1\n", "consumers.unpaid_expiry", "0 or more"),
            ('[notifications]\nmode = "test"\n', "notifications.mode", "production"),
            (SUB + 'events = ["order.shipped"]\n', "subscriptions.portal.events",
             "matches no notification type"),
            (SUB + 'events = ["order.*"]\nsecrets = ["env:S1"]\n'
             'headers = { "Webhook-Signature" = "x" }\n',
             "subscriptions.portal.headers.Webhook-Signature", "cannot be overridden"),
            (SUB + 'events = ["order.*"]\nsecrets = ["env:S1"]\n',
             "subscriptions.portal.secrets[0]", "whsec_"),
            ('[subscriptions."Bad Name"]\nurl = "https://x.example"\n',
             "subscriptions.Bad Name", "subscription name"),
        ],
    )
    def test_bad_values_name_file_and_key(self, tmp_path, extra, key, problem):
        """Each bad setting fails at load with the file, the key and the problem."""
        path = write_config(tmp_path, extra + SOURCE)
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ={"S1": "a", "S2": "b"})
        assert str(path) == info.value.file
        assert key == info.value.key
        assert problem in info.value.problem

    def test_missing_secret_names_the_variable(self, tmp_path):
        """An unset env: secret names the variable and the list entry."""
        with pytest.raises(ConfigError) as info:
            load_settings(write_config(tmp_path, SOURCE), environ={"S1": "a"})
        assert "sources.shop.secrets[1]" == info.value.key
        assert "S2" in info.value.problem

    def test_inline_secret_is_refused(self, tmp_path):
        """A secret written inline is refused: secrets are references."""
        text = SOURCE.replace('"env:S1", "env:S2"', '"hunter2"')
        with pytest.raises(ConfigError) as info:
            load_settings(write_config(tmp_path, text), environ={})
        assert "hunter2" not in str(info.value)

    def test_duplicate_paths_are_refused(self, tmp_path):
        """Two sources on one path is a configuration error."""
        text = SOURCE + '\n[sources.other]\nscheme = "shopify"\nsecrets = ["env:S1"]\n' \
            'mapping = "m.toml"\npath = "/webhooks/shop"\nevent_type = "order.created"\n'
        with pytest.raises(ConfigError) as info:
            load_settings(write_config(tmp_path, text), environ={"S1": "a", "S2": "b"})
        assert "sources.other.path" == info.value.key

    def test_missing_file(self, tmp_path):
        """A config file that does not exist is reported as such."""
        with pytest.raises(ConfigError) as info:
            load_settings(tmp_path / "nope.toml")
        assert "file not found" == info.value.problem


NODES = tuple(f"amqp://guest:pw@127.0.0.1:{port}/" for port in (5701, 5702, 5703))


class TestBrokerAddresses:
    def load(self, tmp_path: Path, broker: str, **env: str):
        text = f"[broker]\n{broker}\n{SOURCE}" if broker else SOURCE
        return load_settings(write_config(tmp_path, text),
                             environ={"S1": "a", "S2": "b", **env}).broker

    @pytest.mark.parametrize(("broker", "env"), [
        ("urls = [" + ", ".join(f'"{url}"' for url in NODES) + "]", {}),
        (f'url = "{",".join(NODES)}"', {}),
        ("", {"AMQP_URL": ", ".join(NODES)}),
        ('urls = ["env:NODE1", "env:NODE2", "env:NODE3"]',
         {f"NODE{i}": url for i, url in enumerate(NODES, 1)}),
    ], ids=["urls", "url with commas", "AMQP_URL with commas", "urls of secrets"])
    def test_a_cluster_in_any_form(self, tmp_path, broker, env):
        """urls, a comma-separated url or AMQP_URL, and secret references, give the same
        addresses in their order: url is the first."""
        settings = self.load(tmp_path, broker, **env)
        assert (NODES, NODES[0], NODES[1:]) == (
            settings.addresses, settings.url, settings.other_urls)

    def test_one_address_as_before(self, tmp_path):
        """One url (or AMQP_URL, or the default) is the only address."""
        assert (NODES[0],) == self.load(tmp_path, f'url = "{NODES[0]}"').addresses
        assert (NODES[1],) == self.load(tmp_path, "", AMQP_URL=NODES[1]).addresses
        assert ("amqp://guest:guest@127.0.0.1:5672/",) == self.load(tmp_path, "").addresses

    @pytest.mark.parametrize(("broker", "env", "key", "problem"), [
        (f'url = "{NODES[0]}"\nurls = ["{NODES[1]}"]', {}, "broker.urls", "not both"),
        ("urls = []", {}, "broker.urls", "at least one"),
        (f'urls = ["{NODES[0]}", 5702]', {}, "broker.urls[1]", "must be a string"),
        (f'urls = ["{NODES[0]}", "http://x/"]', {}, "broker.urls[1]", "amqp://"),
        (f'urls = ["{NODES[0]}", "amqp://[::1/"]', {}, "broker.urls[1]", "not a valid URL"),
        (f'urls = ["{NODES[0]}", "amqp://h:99999/"]', {}, "broker.urls[1]", "not a valid URL"),
        (f'urls = ["{NODES[0]}", "amqps://h/"]', {}, "broker.urls[1]", "mixes amqp"),
        (f'urls = ["{NODES[0]}", "{NODES[0]}"]', {}, "broker.urls[1]", "twice"),
        (f'urls = ["{NODES[0]}", "env:UNSET"]', {}, "broker.urls[1]", "UNSET"),
        (f'url = "{NODES[0]},amqp://h:0x/,{NODES[2]}"', {}, "broker.url",
         "address 2 of 3: is not a valid URL"),
        ('url = "amqp://user:pa,pw@h/"', {}, "broker.url",
         "address 1 of 2: is not a valid URL (commas separate addresses: write one in a "
         "password as %2C)"),
        ("", {"AMQP_URL": f"{NODES[0]},"}, "broker.url", "address 2 of 2: must be an amqp"),
    ])
    def test_a_bad_address_is_named_by_its_place(self, tmp_path, broker, env, key, problem):
        """A bad address fails at load naming the key and which address, never its text
        (which holds the password)."""
        with pytest.raises(ConfigError) as info:
            self.load(tmp_path, broker, **env)
        assert key == info.value.key
        assert problem in info.value.problem
        assert "pw@" not in str(info.value)


class TestResolveSecret:
    def test_file_reference_strips_newline(self, tmp_path):
        """file: reads the file relative to the config folder, without its trailing newline."""
        (tmp_path / "key").write_bytes(b"s3cret\n")
        assert b"s3cret" == resolve_secret("file:key", file="f", key="k", base=tmp_path)

    def test_missing_file_is_config_error(self, tmp_path):
        """An unreadable secret file is a ConfigError naming the key."""
        with pytest.raises(ConfigError) as info:
            resolve_secret("file:nope", file="f", key="sources.x.secrets[0]", base=tmp_path)
        assert "sources.x.secrets[0]" == info.value.key
