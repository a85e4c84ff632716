"""
The admin API's sync configs: an instance's biz types, how each is
delivered, and taking one offline and back.

Every change is written to the store and then told to the delivery
engine, whose cache online devices read configs through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from msync.console.api_bodies import Fields, invalid, not_found
from msync.console.api_calls import LOG_NAMESPACE, Call
from msync.console.api_instances import find_instance
from msync.console.api_shapes import config_json
from msync.delivery.engine import Engine
from msync.model import (
    ConfigState,
    Range,
    ResendMode,
    SyncConfig,
    Target,
    ValidationError,
    check_biz_type,
)
from msync.store import Store

__all__ = ["ConfigApi"]

_log = Logger(namespace=LOG_NAMESPACE)

_CONFIG_FIELDS = (
    "biz_type",
    "description",
    "range",
    "target",
    "multi_device",
    "persistent",
    "resend_mode",
    "threshold",
    "consistency",
)


class ConfigApi:
    """
    The actions of the sync config routes, over the store and the
    delivery engine.
    """

    def __init__(
        self, store: Store, engine: Engine, now_ms: Callable[[], int]
    ) -> None:
        """
        @param now_ms: The time now, in milliseconds since the epoch.
        """
        self._store = store
        self._engine = engine
        self._now_ms = now_ms

    async def configs(self, call: Call, instance_id: str) -> object:
        """List an instance's sync configs."""
        find_instance(self._store, instance_id)
        return [config_json(c) for c in self._store.configs(instance_id)]

    async def create_config(self, call: Call, instance_id: str) -> object:
        """Create a sync config; it starts online."""
        find_instance(self._store, instance_id)
        fields = Fields(call.body, _CONFIG_FIELDS)
        if not fields.given("target"):
            raise invalid("target", "target is required")
        now = self._now_ms()
        config = SyncConfig(
            instance_id=instance_id,
            biz_type=check_biz_type(fields.required_text("biz_type")),
            target=fields.choice("target", Target, Target.USER),
            range=fields.choice("range", Range, Range.SPECIFIED),
            description=fields.text("description"),
            multi_device=fields.flag("multi_device", True),
            persistent=fields.flag("persistent", True),
            resend_mode=fields.choice(
                "resend_mode", ResendMode, ResendMode.ALL
            ),
            threshold=fields.integer("threshold", 100),
            consistency=fields.flag("consistency", False),
            created_ms=now,
            updated_ms=now,
        ).validated()
        await self._store.add_config(config)
        self._engine.config_changed(instance_id)
        _log.info(
            "sync config {instance_id}/{biz_type} created by {user}",
            instance_id=instance_id,
            biz_type=config.biz_type,
            user=call.user,
        )
        return config_json(config)

    async def config(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Show one sync config."""
        return config_json(self._config(instance_id, biz_type))

    async def change_config(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Change a sync config; its biz type and target stay."""
        current = self._config(instance_id, biz_type)
        fields = Fields(call.body, _CONFIG_FIELDS)
        changes: dict[str, object] = {}
        if fields.given("biz_type"):
            changes["biz_type"] = fields.text("biz_type")
        if fields.given("target"):
            changes["target"] = fields.choice("target", Target, current.target)
        if fields.given("description"):
            changes["description"] = fields.text("description")
        if fields.given("range"):
            changes["range"] = fields.choice("range", Range, current.range)
        for name in ("multi_device", "persistent", "consistency"):
            if fields.given(name):
                changes[name] = fields.flag(name, False)
        if fields.given("resend_mode"):
            changes["resend_mode"] = fields.choice(
                "resend_mode", ResendMode, current.resend_mode
            )
        if fields.given("threshold"):
            changes["threshold"] = fields.integer("threshold", 0)
        changes["updated_ms"] = self._now_ms()
        config = current.modified(**changes)
        return await self._saved(call, config, "changed")

    async def take_offline(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Take a sync config offline: it refuses data, pushing pauses."""
        return await self._set_state(
            call, instance_id, biz_type, ConfigState.OFFLINE
        )

    async def bring_online(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Bring a sync config back online."""
        return await self._set_state(
            call, instance_id, biz_type, ConfigState.ONLINE
        )

    async def _set_state(
        self,
        call: Call,
        instance_id: str,
        biz_type: str,
        state: ConfigState,
    ) -> object:
        current = self._config(instance_id, biz_type)
        if current.state is state:
            return config_json(current)
        config = current.modified(state=state, updated_ms=self._now_ms())
        return await self._saved(call, config, f"put {state.value}")

    def _config(self, instance_id: str, biz_type: str) -> SyncConfig:
        find_instance(self._store, instance_id)
        try:
            check_biz_type(biz_type)
        except ValidationError:
            raise not_found(f"no sync config {biz_type!r}") from None
        config = self._store.config(instance_id, biz_type)
        if config is None:
            raise not_found(f"{instance_id} has no sync config {biz_type}")
        return config

    async def _saved(
        self, call: Call, config: SyncConfig, what: str
    ) -> dict[str, Any]:
        await self._store.update_config(config)
        # Online devices read configs through the engine's cache.
        self._engine.config_changed(config.instance_id)
        _log.info(
            "sync config {instance_id}/{biz_type} {what} by {user}",
            instance_id=config.instance_id,
            biz_type=config.biz_type,
            what=what,
            user=call.user,
        )
        return config_json(config)
