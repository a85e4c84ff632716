"""
The device's local store: one LMDB environment in the app's data directory.

It keeps what must outlive the process: the device id and secret, the
bound user, one sync point per (biz, scope), and the pending messages (ops
received but not yet reported by the app).  Every operation is one
transaction and says what it means (receive a sync frame, report a message,
take a gap), so the delivery rules live here in one place and a crash
between two steps can never leave half of one.

Which thread does what (the one rule): everything runs on the reactor
thread, synchronously.  A device holds one connection and writes once per
sync frame, so the cost of blocking on one sync to disk is small, and in
exchange nothing is acknowledged to the server before it is on disk.

Layout, one named database each:

  - C{meta}: C{schema} (the layout version), C{device}, C{secret},
    C{user}, C{session};
  - C{points}: C{biz NUL scope} to C{epoch, op_id} (two big-endian u64);
  - C{pending}: C{biz NUL scope NUL op_id epoch} (u64s again) to msgpack
    C{[payload, third_msg_id, created_ms]}.  The keys list in (biz, scope,
    op_id) order, so a biz type's backlog reads out in delivery order; the
    epoch keeps the ops of a reset log apart from those of the old one.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from msync.device.message import SyncMessage
from msync.wire.messages import Point, Sync

__all__ = ["Identity", "LocalStore", "LocalStoreError", "Received"]

#: The layout version this module reads and writes.
SCHEMA = b"1"

#: LMDB reserves address space, not disk: the file grows as it fills.
#: XXX: an app that never reports its messages fills it in the end; every
#: sync frame then fails, and the device reconnects without progress.
DEFAULT_MAP_SIZE = 256 * 1024 * 1024

_U64 = struct.Struct(">Q")
_POINT = struct.Struct(">QQ")
_SEP = b"\x00"


class LocalStoreError(Exception):
    """The local store cannot be opened or used; the text says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this device is to the server."""

    device_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class Received:
    """
    What one sync frame changed.

    @ivar new: The ops seen for the first time, in frame order (which is
        op id order within each scope).
    @ivar points: The point of each scope the frame named, after the frame;
        empty when points only move on report.
    """

    new: tuple[SyncMessage, ...]
    points: tuple[Point, ...]


def _scope_key(biz: str, scope: str) -> bytes:
    return biz.encode() + _SEP + scope.encode()


def _pending_key(biz: str, scope: str, op_id: int, epoch: int) -> bytes:
    return _scope_key(biz, scope) + _SEP + _U64.pack(op_id) + _U64.pack(epoch)


def _message(key: bytes, value: bytes) -> SyncMessage:
    biz, scope, ids = key.split(_SEP, 2)
    (op_id,) = _U64.unpack_from(ids, 0)
    (epoch,) = _U64.unpack_from(ids, _U64.size)
    payload, third_msg_id, created_ms = msgpack.unpackb(value, raw=False)
    return SyncMessage(
        biz_type=biz.decode(),
        scope=scope.decode(),
        epoch=epoch,
        op_id=op_id,
        payload=payload,
        third_msg_id=third_msg_id,
        created_ms=created_ms,
    )


class LocalStore:
    """
    The device's durable state, in one LMDB environment at C{path}.

    @param sync: Whether each commit waits for the disk.  Only tests and
        throwaway devices should turn it off: the rule "stored before
        acked" holds across a crash only with it on.
    @raise LocalStoreError: if the environment cannot be opened, is open
        already in this process, or was written by another layout.
    """

    def __init__(
        self,
        path: str,
        *,
        sync: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        # The directory holds the device secret: keep it to its owner.
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            env = lmdb.open(
                path,
                subdir=True,
                max_dbs=3,
                map_size=map_size,
                sync=sync,
                mode=0o600,
            )
        except (OSError, lmdb.Error) as e:
            raise LocalStoreError(f"cannot open {path}: {e}") from e
        self._env: lmdb.Environment | None = env
        self._meta = env.open_db(b"meta")
        self._points = env.open_db(b"points")
        self._pending = env.open_db(b"pending")

        with self._transaction(write=True) as txn:
            found = txn.get(b"schema", db=self._meta)
            if found is None:
                txn.put(b"schema", SCHEMA, db=self._meta)
        if found not in (None, SCHEMA):
            self.close()
            raise LocalStoreError(
                f"{path} holds layout {found!r}; this SDK reads {SCHEMA!r}"
            )

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Any]:
        """
        Run one transaction: committed if the block ends normally, thrown
        away if it raises.
        """
        if self._env is None:
            raise LocalStoreError("the local store is closed")
        with self._env.begin(write=write) as txn:
            yield txn

    def close(self) -> None:
        """Close the environment; later calls raise L{LocalStoreError}."""
        if self._env is not None:
            self._env.close()
            self._env = None

    # --- identity and user ----------------------------------------------

    def identity(self, device_id: str | None = None) -> Identity:
        """
        Return the device id and secret, making them the first time.

        @param device_id: An id to use instead of the stored or generated
            one; it is stored, and the secret kept.
        """
        with self._transaction(write=True) as txn:
            stored = txn.get(b"device", db=self._meta)
            secret = txn.get(b"secret", db=self._meta)
            if device_id is None:
                device_id = (
                    stored.decode()
                    if stored is not None
                    else secrets.token_hex(16)
                )
            if stored != device_id.encode():
                txn.put(b"device", device_id.encode(), db=self._meta)
            if secret is None:
                secret = secrets.token_urlsafe(32).encode()
                txn.put(b"secret", secret, db=self._meta)
        return Identity(device_id, secret.decode())

    def user(self) -> tuple[str, str] | None:
        """Return the bound C{(user, session)}, or C{None}."""
        with self._transaction() as txn:
            user = txn.get(b"user", db=self._meta)
            session = txn.get(b"session", db=self._meta)
        if user is None or session is None:
            return None
        return user.decode(), session.decode()

    def bind_user(self, user: str, session: str) -> None:
        """Remember C{user} and C{session} as the bound user."""
        with self._transaction(write=True) as txn:
            txn.put(b"user", user.encode(), db=self._meta)
            txn.put(b"session", session.encode(), db=self._meta)

    def unbind_user(self) -> None:
        """Forget the bound user."""
        with self._transaction(write=True) as txn:
            txn.delete(b"user", db=self._meta)
            txn.delete(b"session", db=self._meta)

    # --- points -----------------------------------------------------------

    def points(self) -> list[Point]:
        """Return every stored point, in (biz, scope) order."""
        out = []
        with self._transaction() as txn:
            for key, value in txn.cursor(db=self._points):
                biz, scope = bytes(key).split(_SEP, 1)
                epoch, op_id = _POINT.unpack(value)
                out.append(Point(biz.decode(), scope.decode(), epoch, op_id))
        return out

    def point(self, biz: str, scope: str) -> Point | None:
        """Return the point of one scope, or C{None} if there is none."""
        with self._transaction() as txn:
            return self._get_point(txn, biz, scope)

    def _get_point(self, txn: Any, biz: str, scope: str) -> Point | None:
        value = txn.get(_scope_key(biz, scope), db=self._points)
        if value is None:
            return None
        epoch, op_id = _POINT.unpack(value)
        return Point(biz, scope, epoch, op_id)

    def _put_point(self, txn: Any, point: Point) -> None:
        txn.put(
            _scope_key(point.biz, point.scope),
            _POINT.pack(point.epoch, point.op_id),
            db=self._points,
        )

    def set_point(self, point: Point) -> None:
        """
        Set a scope's point as given, lower or not: the server said where
        the device now stands (a gap).  Pending messages stay.
        """
        with self._transaction(write=True) as txn:
            self._put_point(txn, point)

    # --- messages ---------------------------------------------------------

    def receive(self, sync: Sync, *, advance: bool) -> Received:
        """
        Take one sync frame, in one transaction.

        In each group, an op at or below the scope's point is a duplicate
        and dropped, and so is one already pending; every other op is
        stored as pending and returned as new.  A group whose epoch is not
        the stored point's comes from a log the server rebuilt: the stored
        point then counts as op 0 of the new epoch, and is written so.

        @param advance: Whether to move each scope's point to its highest
            op id now (acknowledge on receipt) rather than when the app
            reports the message.
        """
        new: list[SyncMessage] = []
        moved: dict[tuple[str, str], Point] = {}
        with self._transaction(write=True) as txn:
            for group in sync.groups:
                stored = self._get_point(txn, group.biz, group.scope)
                base = stored
                if base is None or base.epoch != group.epoch:
                    base = Point(group.biz, group.scope, group.epoch, 0)

                for op in group.ops:
                    if op.op_id <= base.op_id:
                        continue
                    key = _pending_key(
                        group.biz, group.scope, op.op_id, group.epoch
                    )
                    if txn.get(key, db=self._pending) is not None:
                        continue
                    body = msgpack.packb(
                        [op.payload, op.third_msg_id, op.created_ms],
                        use_bin_type=True,
                    )
                    txn.put(key, body, db=self._pending)
                    new.append(
                        SyncMessage(
                            group.biz,
                            group.scope,
                            group.epoch,
                            op.op_id,
                            op.payload,
                            op.third_msg_id,
                            op.created_ms,
                        )
                    )

                after = base
                if advance and group.ops and group.ops[-1].op_id > base.op_id:
                    after = Point(
                        group.biz,
                        group.scope,
                        group.epoch,
                        group.ops[-1].op_id,
                    )
                if after != stored:
                    self._put_point(txn, after)
                if advance:
                    moved[(group.biz, group.scope)] = after
        return Received(tuple(new), tuple(moved.values()))

    def pending(self, biz: str | None = None) -> list[SyncMessage]:
        """
        Return the pending messages of C{biz} (of every biz if C{None}),
        in (biz, scope, op_id) order.
        """
        prefix = b"" if biz is None else biz.encode() + _SEP
        out: list[SyncMessage] = []
        with self._transaction() as txn:
            cursor = txn.cursor(db=self._pending)
            if not cursor.set_range(prefix):
                return out
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    break
                out.append(_message(bytes(key), bytes(value)))
        return out

    def report(self, message: SyncMessage, *, advance: bool) -> Point | None:
        """
        The app consumed C{message}: it stops being pending, for good.

        @param advance: Whether to move the scope's point up to the
            message (acknowledge on report).  The point moves only forward
            and only within its own epoch: a message from a log the server
            has since rebuilt says nothing about the new one.
        @return: The scope's new point if it moved, else C{None}.
        """
        key = _pending_key(
            message.biz_type, message.scope, message.op_id, message.epoch
        )
        with self._transaction(write=True) as txn:
            txn.delete(key, db=self._pending)
            if not advance:
                return None
            stored = self._get_point(txn, message.biz_type, message.scope)
            if stored is not None and (
                stored.epoch != message.epoch or stored.op_id >= message.op_id
            ):
                return None
            point = Point(
                message.biz_type, message.scope, message.epoch, message.op_id
            )
            self._put_point(txn, point)
            return point
