"""
The admin API's server-wide settings: for now the one switch that turns
the gateway's signature check off and on.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from msync.console.api_bodies import Fields
from msync.console.api_calls import LOG_NAMESPACE, Call
from msync.gateway.app import SIGNATURE_CHECK
from msync.store import Store

__all__ = ["SettingsApi"]

_log = Logger(namespace=LOG_NAMESPACE)


class SettingsApi:
    """The actions of the settings routes, over the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def settings(self, call: Call) -> object:
        """Show the server-wide settings."""
        return self._settings()

    async def change_settings(self, call: Call) -> object:
        """Change server-wide settings: the signature switch."""
        fields = Fields(call.body, ("signature_check",))
        if fields.given("signature_check"):
            check = fields.flag("signature_check", True)
            await self._store.put_setting(SIGNATURE_CHECK, check)
            _log.warn(
                "gateway signature check turned {state} by {user}",
                state="on" if check else "off",
                user=call.user,
            )
        return self._settings()

    def _settings(self) -> dict[str, Any]:
        check = self._store.setting(SIGNATURE_CHECK, True) is not False
        return {"signature_check": check}
