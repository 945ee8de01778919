"""The labels consumer's pure pieces and its settings: [labels] checked at start-up naming
the file and the key, its queue declared only when switched on and fed by keys that never
reach the orders queue, the parcel and the message it reads."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from consumers.carriers import CARRIERS
from consumers.carriers.base import Parcel
from consumers.errors import Permanent
from consumers.labels import parcel_for, requested
from router.broker.topology import OPTIONAL_QUEUES, QUEUES, Topology
from router.errors import ConfigError
from router.label_settings import KNOWN_CARRIERS, ParcelSize
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
ON = """
[labels]
enabled = true
api_key = "env:EASYPOST_API_KEY"
[labels.from_address]
name = "W"
line1 = "500 Dock St"
city = "Reno"
postal_code = "89501"
country = "US"
"""


def load(tmp_path: Path, text: str, **options):
    path = tmp_path / "router.toml"
    path.write_text(text)
    return load_settings(path, environ={"EASYPOST_API_KEY": "EZTK_x"}, **options)


class TestLabelSettings:
    def test_off_by_default_and_no_queue(self, tmp_path):
        """No [labels]: off, and no labels queue in the topology."""
        settings = load(tmp_path, "")
        assert not settings.labels.enabled
        assert "labels" not in " ".join(Topology.of(settings.broker).names())

    def test_on_declares_its_queue_and_reads_the_key_only_when_asked(self, tmp_path):
        """Enabled: the labels queue with its retry ladder and dead-letter queue; the key is
        read for the processes that call the carrier, and only for them."""
        settings = load(tmp_path, ON)
        assert {"labels", "labels.retry.5", "labels.retry.30", "labels.retry.3600",
                "labels.dead"} <= set(Topology.of(settings.broker).names())
        assert b"" == settings.labels.api_key
        assert b"EZTK_x" == load(tmp_path, ON, resolve_carrier_secrets=True).labels.api_key

    def test_the_shipped_config_is_off_and_complete(self, test_env):
        """config/router.toml documents every setting, switched off."""
        labels = load_settings(ROOT / "config" / "router.toml", environ=test_env).labels
        assert not labels.enabled and labels.from_address["country"] == "US"

    @pytest.mark.parametrize(("extra", "key", "problem"), [
        ('carrier = "fedex"', "labels.carrier", "unknown carrier"),
        ('api_key = "EZTK_inline"', "labels.api_key", "references"),
        ('base_url = "ftp://x"', "labels.base_url", "https://"),
        ('currency = "dollars"', "labels.currency", "ISO 4217"),
        ('allowed = ["UPS:"]', "labels.allowed", "CARRIER:SERVICE"),
        ("timeout = 0", "labels.timeout", "greater than 0"),
        ("colour = 1", "labels.colour", "unknown setting"),
        ('[labels.by_country]\nCanada = "UPS"', "labels.by_country.Canada", "alpha-2"),
        ("[labels.default_parcel]\nweight_oz = -1", "labels.default_parcel.weight_oz",
         "greater than 0"),
        ('[labels.parcels."SKU-1"]\nlength_in = 3.0', "labels.parcels.SKU-1.weight_oz",
         "required"),
        ('[labels.parcels."SKU-1"]\nweight_oz = 3.0\nlength_in = 3.0',
         "labels.parcels.SKU-1.length_in", "together"),
    ])
    def test_mistakes_name_the_file_and_key(self, tmp_path, extra, key, problem):
        """Each mistake fails at start-up: file, key, what is wrong."""
        if extra.startswith("["):
            text = ON + extra
        elif extra.startswith("api_key"):
            text = ON.replace('api_key = "env:EASYPOST_API_KEY"', extra)
        else:
            text = ON.replace("[labels.from_address]", f"{extra}\n[labels.from_address]")
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, text)
        assert (key, True) == (caught.value.key, problem in str(caught.value)), caught.value
        assert str(tmp_path / "router.toml") in str(caught.value)

    def test_enabled_needs_a_key_and_a_warehouse(self, tmp_path):
        """Switched on without the key or the from-address's city: named."""
        for removed, key in (('api_key = "env:EASYPOST_API_KEY"\n', "labels.api_key"),
                             ('city = "Reno"\n', "labels.from_address.city")):
            with pytest.raises(ConfigError) as caught:
                load(tmp_path, ON.replace(removed, ""))
            assert key == caught.value.key

    def test_a_missing_secret_is_named_when_read(self, tmp_path):
        path = tmp_path / "router.toml"
        path.write_text(ON)
        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ={}, resolve_carrier_secrets=True)
        assert ("labels.api_key", True) == (caught.value.key,
                                            "EASYPOST_API_KEY" in str(caught.value))

    def test_the_known_carriers_are_the_drivers(self):
        """The settings accept exactly the carriers consumers/carriers/ has drivers for."""
        assert set(KNOWN_CARRIERS) == set(CARRIERS)


class TestLabelsQueue:
    def test_its_keys_reach_no_other_consumer(self):
        """The ready_to_ship notification and `labels buy` land on labels (and, for the
        notification, on notifications), never on orders, inventory, shipping or audit."""
        for key in ("notify.order.ready_to_ship", "label.requested"):
            assert any(_matches(key, pattern) for pattern in OPTIONAL_QUEUES["labels"])
            for name, patterns in QUEUES.items():
                wanted = name == "notifications" and key.startswith("notify.")
                assert wanted == any(_matches(key, p) for p in patterns), (name, key)


def _matches(key: str, pattern: str) -> bool:
    """AMQP topic matching for the patterns used here (`*` one word, `#` any)."""
    if pattern.endswith(".#"):
        return key.startswith(pattern[:-1])
    words, parts = key.split("."), pattern.split(".")
    return len(words) == len(parts) and all(fnmatch.fnmatchcase(w, p)
                                            for w, p in zip(words, parts, strict=True))


class TestParcel:
    def test_weights_add_up_and_lines_that_do_not_ship_are_left_out(self, tmp_path):
        settings = load(tmp_path, ON + '[labels.parcels."MUG"]\nweight_oz = 12.0\n'
                        "length_in = 6.0\nwidth_in = 6.0\nheight_in = 6.0\n").labels
        lines = [{"sku": "MUG", "quantity": 2, "ships": True},
                 {"sku": "OTHER", "quantity": 1, "ships": True},
                 {"sku": "GIFT-CARD", "quantity": 1, "ships": False}]
        assert Parcel(40.0) == parcel_for(lines, settings)  # 2 x 12 + the default 16
        assert Parcel(12.0, 6.0, 6.0, 6.0) == parcel_for(lines[:1] and [
            {**lines[0], "quantity": 1}], settings)  # one unit alone: its own box
        assert parcel_for(lines[2:], settings) is None

    def test_the_default_parcels_box(self, tmp_path):
        settings = load(tmp_path, ON + "[labels.default_parcel]\nweight_oz = 10.0\n"
                        "length_in = 9.0\nwidth_in = 6.0\nheight_in = 3.0\n").labels
        assert ParcelSize(10.0, 9.0, 6.0, 3.0) == settings.default_parcel
        assert Parcel(20.0, 9.0, 6.0, 3.0) == parcel_for(
            [{"sku": "X", "quantity": 2, "ships": True}], settings)


class TestRequested:
    def test_what_the_queue_carries(self):
        data = {"data": {"order_id": "A-1"}}
        assert ("A-1", False) == requested({"type": "order.ready_to_ship", **data})
        assert ("A-1", True) == requested({"type": "label.requested", **data})
        with pytest.raises(Permanent):
            requested({"type": "order.created", **data})
