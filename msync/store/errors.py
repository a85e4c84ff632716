"""
What the store raises.  Every error says which record or rule it is about.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class NotFound(StoreError):
    """A record the caller named does not exist."""


class AlreadyExists(StoreError):
    """A record the caller tried to create exists already."""


class DeviceClaimed(StoreError):
    """
    A device id is bound to another client's secret (trust on first use),
    so this client may not use it.
    """


class CorruptRecord(StoreError):
    """A stored record cannot be read back; names its table and key."""

    def __init__(self, table: str, key: bytes, why: str) -> None:
        super().__init__(
            f"corrupt record in table {table!r} at key {key!r}: {why}"
        )
        self.table = table
        self.key = key


class SchemaMismatch(StoreError):
    """The data directory was written by an incompatible version."""


class StoreClosed(StoreError):
    """The store was used before it opened or after it closed."""
