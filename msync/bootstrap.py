"""
First-start bootstrap: a demo instance, an access key and an admin login.

On an empty data directory msync invents them, writes them to
C{bootstrap.json} (mode 0600) before storing them, and says them once.
Later starts find the file and make sure its records exist, so a crash
between the two steps heals on the next start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msync.auth import hash_password, new_access_key, new_secret
from msync.model import AccessKey, Instance
from msync.store import Store

_log = Logger()

DEMO_INSTANCE = "DEMOWORKSPACE_demoapp"
FILE_NAME = "bootstrap.json"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """The credentials a fresh msync starts with."""

    instance_id: str
    access_key: str
    secret: str
    admin_user: str
    admin_password: str


def load(path: str) -> Bootstrap | None:
    """
    Read C{bootstrap.json}, or return L{None} if there is none.

    @raise ValueError: if the file exists but is not a bootstrap record.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None
    try:
        return Bootstrap(**{k: str(raw[k]) for k in Bootstrap.__slots__})
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a bootstrap record: {e}") from e


def _write(path: str, record: Bootstrap) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(record), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class BootstrapService(Service):
    """Makes sure the bootstrap credentials exist once the store is open."""

    def __init__(
        self,
        store: Store,
        data_dir: str,
        clock: IReactorTime,
        say: Callable[[str], Any],
    ) -> None:
        self._store = store
        self._path = os.path.join(data_dir, FILE_NAME)
        self._clock = clock
        self._say = say

    def startService(self) -> None:
        super().startService()
        self.ready = self._ensure()
        self.ready.addErrback(lambda f: _log.failure("bootstrap failed", f))

    @inlineCallbacks
    def _ensure(self):  # type: ignore[no-untyped-def]
        record = load(self._path)
        fresh = record is None
        if record is None:
            if self._store.instances():
                _log.warn(
                    "{path} is missing but the store holds instances; "
                    "not bootstrapping again",
                    path=self._path,
                )
                return None
            record = Bootstrap(
                instance_id=DEMO_INSTANCE,
                access_key=new_access_key(),
                secret=new_secret(),
                admin_user="admin",
                admin_password=new_secret(12),
            )
            _write(self._path, record)

        now = int(self._clock.seconds() * 1000)
        if self._store.instance(record.instance_id) is None:
            yield self._store.put_instance(
                Instance(record.instance_id, created_ms=now)
            )
        if self._store.access_key(record.access_key) is None:
            yield self._store.put_access_key(
                AccessKey(
                    record.access_key,
                    record.secret,
                    (record.instance_id,),
                    now,
                )
            )
        if self._store.admin_hash(record.admin_user) is None:
            yield self._store.put_admin(
                record.admin_user, hash_password(record.admin_password)
            )
        if fresh:
            self._say(_banner(record, self._path))
        _log.info(
            "bootstrap credentials in {path} (instance {instance_id})",
            path=self._path,
            instance_id=record.instance_id,
        )
        return record


def _banner(record: Bootstrap, path: str) -> str:
    return (
        "\n"
        f"msync: first start, created these (also in {path}):\n"
        f"  instance_id     {record.instance_id}\n"
        f"  access_key      {record.access_key}\n"
        f"  secret          {record.secret}\n"
        f"  admin_user      {record.admin_user}\n"
        f"  admin_password  {record.admin_password}\n"
        "\n"
    )
