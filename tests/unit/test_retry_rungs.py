"""Which retry rung a failed message waits on (consumers.runner.rung), and which ladder each
work queue has (Topology.ladder, [labels] and [storefront] retry_ladder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router.broker.topology import Topology
from router.errors import ConfigError
from router.label_settings import OUTAGE_LADDER
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
LADDER = (5, 30, 120, 600, 1800, 3600)


class TestRung:
    @pytest.mark.parametrize(("attempt", "retry_after", "expected"), [
        (0, None, 5),      # the ladder's own rung
        (2, None, 120),
        (9, None, 3600),   # past the end (a deferred message): the last rung
        (0, 5, 5),         # exactly a rung
        (0, 6, 30),        # the smallest rung at least as long
        (0, 0.5, 5),
        (0, 7200, 3600),   # longer than any: the longest
        (3, 20, 600),      # never shorter than the attempt's own rung
    ])
    def test_the_rung(self, attempt, retry_after, expected):
        """The ladder's rung for the attempt, or the rung fitting Retry-After if longer."""
        from consumers.runner import rung

        assert expected == rung(LADDER, attempt, retry_after)

    def test_a_deferred_message_waits_on_the_longest_rung(self):
        """Deferred without a wait of its own: the longest rung; with one, the rung for it."""
        from consumers.runner import rung

        assert (3600, 600) == (rung(LADDER, 0, None, deferred=True),
                               rung(LADDER, 0, 300, deferred=True))


class TestLadders:
    def test_labels_and_storefront_have_their_own_ladders(self):
        """Their queues' retry queues follow their ladder, every other queue [broker]'s."""
        topology = Topology("p.", (1, 2), optional=("labels", "storefront"),
                            ladders=(("labels", (5, 60)), ("storefront", (7,))))
        names = set(topology.names())
        assert {"p.labels.retry.5", "p.labels.retry.60", "p.storefront.retry.7"} <= names
        assert not {"p.labels.retry.1", "p.storefront.retry.2"} & names
        assert {"p.orders.retry.1", "p.orders.retry.2", "p.notifications.retry.2"} <= names
        assert ((1, 2), (5, 60)) == (topology.ladder("orders"), topology.ladder("labels"))

    def test_a_repeated_rung_is_one_queue(self):
        """The default ladder repeats its hourly rung: one NAME.retry.3600 queue."""
        topology = Topology(optional=("labels",), ladders=(("labels", OUTAGE_LADDER),))
        assert 1 == topology.names().count("labels.retry.3600")

    def test_the_default_outlasts_an_hour_long_outage(self):
        """Hours long: a day of retries; its first rungs short, none longer than an hour."""
        assert sum(OUTAGE_LADDER) >= 24 * 3600
        assert (5, 3600) == (OUTAGE_LADDER[0], max(OUTAGE_LADDER))

    def test_the_shipped_config_gives_them_the_outage_ladder(self):
        """config/router.toml: labels and storefront on the long ladder, [broker]'s short."""
        settings = load_settings(ROOT / "config" / "router.toml", resolve_secrets=False)
        assert (OUTAGE_LADDER, OUTAGE_LADDER) == (settings.labels.retry_ladder,
                                                  settings.storefront.retry_ladder)
        topology = Topology.of(settings.broker)
        assert (OUTAGE_LADDER, (5, 15, 45)) == (topology.ladder("labels"),
                                                topology.ladder("orders"))

    @pytest.mark.parametrize("table", ["labels", "storefront"])
    @pytest.mark.parametrize("value", ["[]", "[0, 5]", "[5, true]", "[5000000]", "5"])
    def test_a_bad_ladder_is_refused_at_start(self, tmp_path, table, value):
        """Validated as [broker]'s: whole seconds from 1 to RabbitMQ's longest TTL."""
        shutil.copytree(ROOT / "config", tmp_path / "config")
        path = tmp_path / "config" / "router.toml"
        path.write_text(path.read_text().replace(
            f"[{table}]\n", f"[{table}]\nretry_ladder = {value}\n", 1))
        with pytest.raises(ConfigError, match=f"{table}.retry_ladder"):
            load_settings(path, resolve_secrets=False)
