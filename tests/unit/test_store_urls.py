"""The store's pure pieces: URL dispatch and placeholder rewriting."""

from __future__ import annotations

import pytest

from consumers.store import (
    PostgresStore,
    SqliteStore,
    open_store,
    redact_url,
    to_sqlite_sql,
)


def test_sqlite_urls() -> None:
    relative = open_store("sqlite:///data/consumers.sqlite3")
    assert isinstance(relative, SqliteStore) and relative.path == "data/consumers.sqlite3"
    absolute = open_store("sqlite:////var/lib/store.sqlite3")
    assert isinstance(absolute, SqliteStore) and absolute.path == "/var/lib/store.sqlite3"
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteStore) and memory.path == ":memory:"


def test_postgresql_urls() -> None:
    store = open_store("postgresql://app@db:5432/consumers", pool_max=8)
    assert isinstance(store, PostgresStore) and store.pool_max == 8
    assert isinstance(open_store("postgres://app@db/consumers"), PostgresStore)


@pytest.mark.parametrize(
    "url, scheme",
    [
        ("mysql://app:hunter2@db/consumers", "mysql"),
        ("redis://:hunter2@cache", "redis"),
        ("/just/a/path", "(none)"),
    ],
)
def test_unsupported_scheme_names_it_without_password(url: str, scheme: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_store(url)
    assert repr(scheme) in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_sqlite_url_without_path() -> None:
    with pytest.raises(ValueError):
        open_store("sqlite://")


def test_redact_url() -> None:
    assert redact_url("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("postgresql://app@db/x") == "postgresql://app@db/x"


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE a = ?1 AND b = ?2"),
        (
            "UPDATE t SET a = $2 WHERE id = $1 OR a = $2",
            "UPDATE t SET a = ?2 WHERE id = ?1 OR a = ?2",
        ),
        (
            "SELECT '$1', 'it''s $2', \"$3\" FROM t WHERE x = $10",
            "SELECT '$1', 'it''s $2', \"$3\" FROM t WHERE x = ?10",
        ),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_placeholders_become_numbered_sqlite_parameters(sql: str, expected: str) -> None:
    assert to_sqlite_sql(sql) == expected
    assert to_sqlite_sql(sql) is to_sqlite_sql(sql)  # cached once per distinct statement
