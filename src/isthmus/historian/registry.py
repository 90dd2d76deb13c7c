"""The historian backends, keyed by ``storage.type`` in the configuration."""

from __future__ import annotations

from pathlib import Path

from isthmus.historian.base import Store, StoreFactory
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.historian.sqlite.store import SQLiteStore
from isthmus.model.config import StorageConfig
from isthmus.model.registry import Registry


def _duckdb(config: StorageConfig, data_dir: Path) -> Store:
    return DuckDBStore(config, data_dir)


def _sqlite(config: StorageConfig, data_dir: Path) -> Store:
    return SQLiteStore(config, data_dir)


def _postgres(config: StorageConfig, data_dir: Path) -> Store:
    # Imported on use: psycopg is only loaded by processes that store in PostgreSQL.
    from isthmus.historian.postgres.windows import postgres_store

    return postgres_store(config, data_dir)


def default_stores() -> Registry[StoreFactory]:
    """``duckdb`` (the default, see docs/decisions/0002), ``sqlite`` and ``postgres``.

    ``postgres`` reads its DSN from the environment variable ``ISTHMUS_PG_DSN``.
    """
    stores: Registry[StoreFactory] = Registry("store")
    stores.register("duckdb", _duckdb)
    stores.register("sqlite", _sqlite)
    stores.register("postgres", _postgres)
    return stores
