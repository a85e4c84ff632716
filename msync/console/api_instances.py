"""
The admin API's instances, and the access keys a backend signs its
calls to them with.

L{find_instance} is how every route below an instance finds it, so
that a name no instance can have and an instance that does not exist
are refused alike (404).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.logger import Logger

from msync.auth import new_access_key, new_secret
from msync.console.api_bodies import (
    ApiError,
    Fields,
    app_key,
    invalid,
    not_found,
    time_zone,
    validation_url,
)
from msync.console.api_calls import LOG_NAMESPACE, Call, Creations
from msync.console.api_shapes import instance_json, key_json
from msync.model import (
    AccessKey,
    Instance,
    ValidationError,
    check_instance_id,
)
from msync.store import Store

__all__ = ["InstanceApi", "KeyApi", "find_instance"]

_log = Logger(namespace=LOG_NAMESPACE)

_MAX_INSTANCES_PER_KEY = 1000


def find_instance(store: Store, instance_id: str) -> Instance:
    """The instance of that id, or a 404 refusal."""
    try:
        check_instance_id(instance_id)
    except ValidationError:
        raise not_found(f"no instance {instance_id!r}") from None
    instance = store.instance(instance_id)
    if instance is None:
        raise not_found(f"no instance {instance_id!r}")
    return instance


class InstanceApi:
    """The actions of the instance routes, over the store."""

    def __init__(self, store: Store, now_ms: Callable[[], int]) -> None:
        """
        @param now_ms: The time now, in milliseconds since the epoch.
        """
        self._store = store
        self._now_ms = now_ms
        self._creating = Creations("instance")

    async def instances(self, call: Call) -> object:
        """List every instance."""
        return [instance_json(i) for i in self._store.instances()]

    async def create_instance(self, call: Call) -> object:
        """Create an instance."""
        fields = Fields(
            call.body, ("instance_id", "time_zone", "validation_url")
        )
        instance = Instance(
            instance_id=check_instance_id(fields.required_text("instance_id")),
            time_zone=time_zone(fields.text("time_zone", "UTC")),
            validation_url=validation_url(fields.text("validation_url")),
            created_ms=self._now_ms(),
        )
        name = instance.instance_id
        await self._creating.once(
            name,
            lambda: self._store.instance(name) is not None,
            lambda: self._store.put_instance(instance),
        )
        _log.info(
            "instance {instance_id} created by {user}",
            instance_id=name,
            user=call.user,
        )
        return instance_json(instance)

    async def instance(self, call: Call, instance_id: str) -> object:
        """Show one instance."""
        return instance_json(find_instance(self._store, instance_id))

    async def change_instance(self, call: Call, instance_id: str) -> object:
        """Change an instance's time zone, validation URL or app key."""
        current = find_instance(self._store, instance_id)
        fields = Fields(call.body, ("time_zone", "validation_url", "app_key"))
        instance = replace(
            current,
            time_zone=time_zone(fields.text("time_zone", current.time_zone)),
            validation_url=validation_url(
                fields.text("validation_url", current.validation_url)
            ),
            app_key=app_key(fields.text("app_key", current.app_key)),
        )
        await self._store.put_instance(instance)
        # Which fields, never the app key's value.
        _log.info(
            "instance {instance_id} changed by {user}: {fields}",
            instance_id=instance_id,
            user=call.user,
            fields=sorted(k for k in call.body if fields.given(k)),
        )
        return instance_json(instance)


class KeyApi:
    """The actions of the access key routes, over the store."""

    def __init__(self, store: Store, now_ms: Callable[[], int]) -> None:
        """
        @param now_ms: The time now, in milliseconds since the epoch.
        """
        self._store = store
        self._now_ms = now_ms

    async def keys(self, call: Call) -> object:
        """List every access key, without secrets."""
        return [key_json(k) for k in self._store.access_keys()]

    async def create_key(self, call: Call) -> object:
        """Make an access key; its secret is shown this once."""
        names = Fields(call.body, ("instances",)).raw("instances")
        if not isinstance(names, list) or not names:
            raise invalid("instances", "instances must be a list of names")
        if len(names) > _MAX_INSTANCES_PER_KEY:
            raise invalid(
                "instances",
                f"at most {_MAX_INSTANCES_PER_KEY} instances per key",
            )
        instances: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise invalid("instances", "instances must be text")
            try:
                find_instance(self._store, name)
            except ApiError:
                raise invalid("instances", f"no instance {name!r}") from None
            if name not in instances:
                instances.append(name)

        access_key = new_access_key()
        while self._store.access_key(access_key) is not None:
            access_key = new_access_key()
        key = AccessKey(
            access_key=access_key,
            secret=new_secret(),
            instances=tuple(instances),
            created_ms=self._now_ms(),
        )
        await self._store.put_access_key(key)
        _log.info(
            "access key {access_key} made by {user} for {instances}",
            access_key=access_key,
            user=call.user,
            instances=instances,
        )
        return key_json(key, with_secret=True)

    async def revoke_key(self, call: Call, access_key: str) -> object:
        """Revoke an access key: the gateway refuses it from now on."""
        key = None
        if len(access_key) <= 128:
            key = self._store.access_key(access_key)
        if key is None:
            raise not_found(f"no access key {access_key!r}")
        if not key.revoked:
            key = replace(key, revoked=True)
            await self._store.put_access_key(key)
            _log.info(
                "access key {access_key} revoked by {user}",
                access_key=access_key,
                user=call.user,
            )
        return key_json(key)
