"""The statement-building helpers the store's callers share: numbered placeholders and
parameter-bounded chunks."""

from consumers.store import PARAMS_PER_STATEMENT, chunks, placeholders


def test_placeholders_are_numbered_from_first() -> None:
    assert placeholders(3) == "$1, $2, $3"
    assert placeholders(2, first=4) == "$4, $5"
    assert placeholders(0) == ""


def test_chunks_cover_every_value_once_within_the_bound() -> None:
    values = list(range(2 * PARAMS_PER_STATEMENT + 7))
    parts = chunks(values, PARAMS_PER_STATEMENT)
    assert [len(part) for part in parts] == [PARAMS_PER_STATEMENT, PARAMS_PER_STATEMENT, 7]
    assert [v for part in parts for v in part] == values
    assert chunks([], 10) == []
