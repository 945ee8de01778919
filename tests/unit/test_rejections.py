"""router.rejections: the refusals one process keeps per source, the answer that merges every
worker's, and the query of GET /rejections."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import orjson
import pytest

from router.errors import BadQuery
from router.rejections import FIELDS, Rejections, merge, read_query


def ticking(start: float = 1_800_000_000.0):
    """A clock one second later at each call."""
    return itertools.count(start).__next__


def recorder(kept: int = 3, directory: Path | None = None) -> Rejections:
    return Rejections(kept, directory, clock=ticking())


def refuse(rejections: Rejections, source: str, n: int, reason: str = "invalid_signature",
           status: int = 401) -> None:
    for i in range(n):
        rejections.record(source, status, reason, f"{source}-{i}", "192.0.2.7")


def ids(answer: dict) -> list[str]:
    return [r["delivery_id"] for r in answer["rejections"]]


class TestRecord:
    def test_at_most_kept_per_source_the_newest(self):
        """Each source keeps its own `kept` newest; a flood on one does not push out another."""
        rejections = recorder(kept=3)
        refuse(rejections, "portal", 2)
        refuse(rejections, "shopify", 50)
        answer = rejections.answer()
        assert ["shopify-49", "shopify-48", "shopify-47", "portal-1", "portal-0"] == ids(answer)

    def test_newest_first_across_sources(self):
        """The answer is ordered by time, newest first, whatever the source."""
        rejections = recorder(kept=10)
        rejections.record("shopify", 401, "invalid_signature", "a", None)
        rejections.record("-", 404, "unknown_source", None, "192.0.2.1")
        rejections.record("shopify", 415, "unsupported_media_type", "b", None)
        assert ["b", None, "a"] == ids(rejections.answer())

    def test_counts_every_refusal_by_source_and_reason(self):
        """The counts go on past what the buffer keeps."""
        rejections = recorder(kept=2)
        refuse(rejections, "shopify", 5)
        refuse(rejections, "shopify", 1, "missing_signature")
        refuse(rejections, "-", 4, "unknown_source", 404)
        expected = {"shopify": {"invalid_signature": 5, "missing_signature": 1},
                    "-": {"unknown_source": 4}}
        assert expected == rejections.answer()["counts"]

    def test_kept_0_keeps_none_but_counts(self):
        """rejections_kept = 0 turns the buffer off; the counts stay."""
        rejections = recorder(kept=0)
        refuse(rejections, "shopify", 3)
        assert {"rejections": [], "counts": {"shopify": {"invalid_signature": 3}}} == (
            rejections.answer())

    def test_only_the_listed_fields(self):
        """A rejection is when, source, status, reason, delivery id and client: nothing else."""
        rejections = Rejections(5, clock=lambda: 1_800_000_000.25)
        rejections.record("shopify", 401, "invalid_signature", "evt-1", "192.0.2.7")
        expected = {"at": "2027-01-15T08:00:00.250+00:00", "source": "shopify", "status": 401,
                    "reason": "invalid_signature", "delivery_id": "evt-1",
                    "client": "192.0.2.7"}
        assert [expected] == rejections.answer()["rejections"]
        assert list(FIELDS) == list(expected)


class TestFilters:
    def test_source(self):
        """`source` keeps that source's rejections and counts only."""
        rejections = recorder(kept=10)
        refuse(rejections, "shopify", 2)
        refuse(rejections, "-", 1, "unknown_source", 404)
        answer = rejections.answer(source="-")
        assert ["-"] == [r["source"] for r in answer["rejections"]]
        assert {"-": {"unknown_source": 1}} == answer["counts"]

    def test_limit(self):
        """`limit` keeps the newest that many, across sources; the counts are whole."""
        rejections = recorder(kept=10)
        refuse(rejections, "shopify", 3)
        refuse(rejections, "portal", 3)
        answer = rejections.answer(limit=4)
        assert ["portal-2", "portal-1", "portal-0", "shopify-2"] == ids(answer)
        assert {"shopify": {"invalid_signature": 3}, "portal": {"invalid_signature": 3}} == (
            answer["counts"])

    @pytest.mark.parametrize(("query", "expected"), [
        ({}, (None, None)),
        ({"source": "shopify"}, ("shopify", None)),
        ({"source": "-", "limit": "5"}, ("-", 5)),
        ({"limit": "000000001"}, (None, 1)),
    ])
    def test_good_queries(self, query, expected):
        """A configured source, `-`, and a whole number from 1."""
        assert expected == read_query(query, {"shopify", "portal"})

    @pytest.mark.parametrize("query", [
        {"source": "nope"}, {"source": ""}, {"limit": "0"}, {"limit": "-1"}, {"limit": "1.5"},
        {"limit": ""}, {"limit": "²"}, {"limit": "1" * 10}, {"limit": " 5"}, {"sorce": "shopify"},
    ])
    def test_bad_queries(self, query):
        """Anything else is a 400 bad_request, without the value in the message."""
        with pytest.raises(BadQuery) as info:
            read_query(query, {"shopify", "portal"})
        assert (400, "bad_request") == (info.value.status, info.value.reason)
        assert all(value not in info.value.message for value in query.values() if len(value) > 2)


def worker_file(directory: Path, pid: int, rejections: list[dict], counts: dict) -> None:
    (directory / f"rejections-{pid}.json").write_bytes(
        orjson.dumps({"rejections": rejections, "counts": counts}))


def rejection(at: str, source: str = "shopify", delivery_id: str | None = None, **extra) -> dict:
    return {"at": at, "source": source, "status": 401, "reason": "invalid_signature",
            "delivery_id": delivery_id, "client": "192.0.2.9", **extra}


class TestWorkers:
    async def test_answer_merges_every_workers_file_with_its_own_memory(self, tmp_path):
        """Other workers' files (a dead one's too) and this process's memory make one answer:
        newest first, the newest `kept` per source, the counts added up."""
        worker_file(tmp_path, 1, [rejection("2027-01-15T08:00:05.000+00:00", delivery_id="w1-b"),
                                  rejection("2027-01-15T07:59:58.000+00:00", delivery_id="w1-a")],
                    {"shopify": {"invalid_signature": 7}})
        worker_file(tmp_path, 2, [rejection("2027-01-15T08:00:01.500+00:00", "-", None)],
                    {"-": {"unknown_source": 1}})
        rejections = Rejections(3, tmp_path, clock=ticking(1_800_000_000.0))  # 08:00:00, :01
        refuse(rejections, "shopify", 2)
        answer = rejections.answer()
        assert ["w1-b", None, "shopify-1", "shopify-0"] == ids(answer)
        assert {"shopify": {"invalid_signature": 9}, "-": {"unknown_source": 1}} == (
            answer["counts"])

    def test_its_own_file_is_read_from_memory(self, tmp_path):
        """This process's file is what it wrote before; its memory is newer."""
        worker_file(tmp_path, os.getpid(), [rejection("2027-01-15T08:00:05.000+00:00", "old")],
                    {"shopify": {"invalid_signature": 1}})
        rejections = recorder(kept=3, directory=tmp_path)
        assert {"rejections": [], "counts": {}} == rejections.answer()

    def test_a_file_keeps_nothing_but_the_listed_fields(self, tmp_path):
        """Whatever a file holds, an answer gives only the fields of a rejection."""
        worker_file(tmp_path, 1, [rejection("2027-01-15T08:00:05.000+00:00", body="{secret}",
                                            headers={"X-Shopify-Hmac-Sha256": "x"})], {})
        [only] = recorder(directory=tmp_path).answer()["rejections"]
        assert list(FIELDS) == list(only)

    def test_unreadable_files_are_skipped(self, tmp_path):
        """A file that is not JSON, or not shaped as ours, does not break the answer."""
        (tmp_path / "rejections-1.json").write_bytes(b"{half")
        (tmp_path / "rejections-2.json").write_bytes(b'{"rejections": 1}')
        assert {"rejections": [], "counts": {}} == recorder(directory=tmp_path).answer()

    def test_merge_filters_by_source_and_limit(self):
        """The same filters apply to merged files."""
        parts = [{"rejections": [rejection(f"2027-01-15T08:00:0{i}.000+00:00", source,
                                           f"{source}{i}") for i in range(3)],
                  "counts": {source: {"invalid_signature": 3}}} for source in ("a", "b")]
        answer = merge(parts, kept=100, source="b", limit=2)
        assert {"rejections": [rejection("2027-01-15T08:00:02.000+00:00", "b", "b2"),
                               rejection("2027-01-15T08:00:01.000+00:00", "b", "b1")],
                "counts": {"b": {"invalid_signature": 3}}} == answer


def read(path: Path) -> dict | None:
    return orjson.loads(path.read_bytes()) if path.exists() else None


async def written(path: Path, timeout: float = 5.0) -> dict:
    """What `path` holds once it is written (its writer's timer is in this loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := read(path)) is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path.name} was not written")


class TestWriting:
    async def test_written_by_a_timer_not_per_request(self, tmp_path):
        """Refusals mark the file for writing; a timer writes them all at once, soon after."""
        rejections = recorder(kept=100, directory=tmp_path)
        path = tmp_path / f"rejections-{os.getpid()}.json"
        refuse(rejections, "shopify", 50)
        assert not path.exists()  # nothing written on the request's path
        assert 50 == len((await written(path))["rejections"])
        refuse(rejections, "shopify", 1, "missing_signature")
        await asyncio.sleep(0)
        assert {"invalid_signature": 50} == orjson.loads(path.read_bytes())["counts"]["shopify"]
        path.unlink()
        assert {"invalid_signature": 50, "missing_signature": 1} == (
            (await written(path))["counts"]["shopify"])
        assert [f"rejections-{os.getpid()}.json"] == [p.name for p in tmp_path.iterdir()]

    async def test_close_writes_what_is_pending(self, tmp_path):
        """A stopping worker's last refusals reach its file at once."""
        rejections = recorder(directory=tmp_path)
        refuse(rejections, "shopify", 1)
        rejections.close()
        assert 1 == len(orjson.loads(
            (tmp_path / f"rejections-{os.getpid()}.json").read_bytes())["rejections"])
