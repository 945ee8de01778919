"""Topology.work_queue_bases, the one list of consumer queues that operators' tools (the
console's Overview and Dead letters, `dlq`) show: exactly the work queues declared."""

from __future__ import annotations

import pytest

from router.broker.topology import Topology


class TestWorkQueueBases:
    @pytest.mark.parametrize("optional", [(), ("labels",)])
    def test_they_are_the_declared_work_queues(self, optional):
        """Each base has its queue and NAME.dead declared, and every declared dead queue
        belongs to one base."""
        topology = Topology("p.", (1, 2), optional=optional)
        declared = topology.names()
        bases = topology.work_queue_bases()
        assert all({topology.queue(b), topology.dead_queue(b)} <= set(declared) for b in bases)
        dead = sorted(name for name in declared if name.endswith(".dead"))
        assert sorted(topology.dead_queue(b) for b in bases) == dead

    def test_labels_only_while_switched_on(self):
        """labels is a base only when the settings switch it on."""
        assert "labels" not in Topology().work_queue_bases()
        assert "labels" in Topology(optional=("labels",)).work_queue_bases()
