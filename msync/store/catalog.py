"""
The catalog rules: instances, access keys, admin logins, settings, sync
configs and the device registry.
"""

from __future__ import annotations

from msync.model import (
    AccessKey,
    ConfigState,
    Device,
    Instance,
    Range,
    ResendMode,
    SyncConfig,
    Target,
    ValidationError,
    check_instance_id,
    check_link,
)
from msync.store.errors import (
    AlreadyExists,
    CorruptRecord,
    DeviceClaimed,
    NotFound,
)
from msync.store.records import (
    join,
    pack,
    u64,
    unpack,
)
from msync.store.tables import Table, Tables, prefix_end

# --- instances, keys, admins, settings -------------------------------


def put_instance(tx: Tables, instance: Instance) -> None:
    """Create or replace an instance."""
    check_instance_id(instance.instance_id)
    tx.put(
        Table.INSTANCES,
        instance.instance_id.encode(),
        pack(
            {
                "tz": instance.time_zone,
                "validation_url": instance.validation_url,
                "created": instance.created_ms,
                "app_key": instance.app_key,
            }
        ),
    )


def get_instance(tx: Tables, instance_id: str) -> Instance | None:
    """Return the named instance, or L{None}."""
    key = instance_id.encode()
    raw = tx.get(Table.INSTANCES, key)
    if raw is None:
        return None
    r = unpack(Table.INSTANCES, key, raw)
    return Instance(
        instance_id,
        r["tz"],
        r["validation_url"],
        r["created"],
        r.get("app_key", ""),
    )


def list_instances(tx: Tables) -> list[Instance]:
    """Return every instance, by name."""
    names = [k.decode() for k, _ in tx.scan(Table.INSTANCES, b"")]
    return [i for i in map(lambda n: get_instance(tx, n), names) if i]


def put_access_key(tx: Tables, key: AccessKey) -> None:
    """Create or replace an access key."""
    check_link("access_key", key.access_key)
    for instance_id in key.instances:
        check_instance_id(instance_id)
    tx.put(
        Table.KEYS,
        key.access_key.encode(),
        pack(
            {
                "secret": key.secret,
                "instances": list(key.instances),
                "created": key.created_ms,
                "revoked": key.revoked,
            }
        ),
    )


def get_access_key(tx: Tables, access_key: str) -> AccessKey | None:
    """Return the named access key, or L{None}."""
    key = access_key.encode()
    raw = tx.get(Table.KEYS, key)
    if raw is None:
        return None
    r = unpack(Table.KEYS, key, raw)
    return AccessKey(
        access_key,
        r["secret"],
        tuple(r["instances"]),
        r["created"],
        r["revoked"],
    )


def list_access_keys(tx: Tables) -> list[AccessKey]:
    """Return every access key, by name."""
    names = [k.decode() for k, _ in tx.scan(Table.KEYS, b"")]
    return [k for k in (get_access_key(tx, n) for n in names) if k]


def put_admin(tx: Tables, name: str, password_hash: str) -> None:
    """Create or replace an admin login."""
    check_link("admin_user", name)
    tx.put(Table.ADMINS, name.encode(), pack({"hash": password_hash}))


def get_admin(tx: Tables, name: str) -> str | None:
    """Return the password hash of an admin login, or L{None}."""
    raw = tx.get(Table.ADMINS, name.encode())
    if raw is None:
        return None
    return str(unpack(Table.ADMINS, name.encode(), raw)["hash"])


def list_admins(tx: Tables) -> list[str]:
    """Return every admin login name."""
    return [k.decode() for k, _ in tx.scan(Table.ADMINS, b"")]


def put_token(
    tx: Tables, token_id: str, token_hash: bytes, admin: str, created_ms: int
) -> None:
    """Store an API token's hash (the token itself is never stored)."""
    check_link("token_id", token_id)
    tx.put(
        Table.TOKENS,
        token_id.encode(),
        pack({"hash": token_hash, "admin": admin, "created": created_ms}),
    )


def get_token(tx: Tables, token_id: str) -> tuple[bytes, str] | None:
    """Return an API token's hash and admin, or L{None}."""
    key = token_id.encode()
    raw = tx.get(Table.TOKENS, key)
    if raw is None:
        return None
    r = unpack(Table.TOKENS, key, raw)
    return bytes(r["hash"]), str(r["admin"])


def delete_token(tx: Tables, token_id: str) -> bool:
    """Revoke an API token; say whether it existed."""
    key = token_id.encode()
    if tx.get(Table.TOKENS, key) is None:
        return False
    tx.delete(Table.TOKENS, key)
    return True


def put_setting(tx: Tables, name: str, value: object) -> None:
    """Set a server-wide setting to a msgpack-able value."""
    tx.put(Table.SETTINGS, name.encode(), pack({"v": value}))


def get_setting(tx: Tables, name: str, default: object = None) -> object:
    """Return a server-wide setting, or C{default}."""
    raw = tx.get(Table.SETTINGS, name.encode())
    if raw is None:
        return default
    return unpack(Table.SETTINGS, name.encode(), raw)["v"]


# --- sync configs -----------------------------------------------------


def _config_key(instance_id: str, biz_type: str) -> bytes:
    return join(instance_id, biz_type)


def _config_record(c: SyncConfig) -> bytes:
    return pack(
        {
            "target": c.target.value,
            "range": c.range.value,
            "description": c.description,
            "multi_device": c.multi_device,
            "persistent": c.persistent,
            "resend_mode": c.resend_mode.value,
            "threshold": c.threshold,
            "consistency": c.consistency,
            "state": c.state.value,
            "created": c.created_ms,
            "updated": c.updated_ms,
        }
    )


def _read_config(key: bytes, raw: bytes) -> SyncConfig:
    r = unpack(Table.CONFIGS, key, raw)
    instance_id, biz_type = key.decode().split("\x00")
    try:
        return SyncConfig(
            instance_id=instance_id,
            biz_type=biz_type,
            target=Target(r["target"]),
            range=Range(r["range"]),
            description=r["description"],
            multi_device=r["multi_device"],
            persistent=r["persistent"],
            resend_mode=ResendMode(r["resend_mode"]),
            threshold=r["threshold"],
            consistency=r["consistency"],
            state=ConfigState(r["state"]),
            created_ms=r["created"],
            updated_ms=r["updated"],
        )
    except (KeyError, ValueError) as e:
        raise CorruptRecord("configs", key, repr(e)) from e


def add_config(tx: Tables, config: SyncConfig) -> SyncConfig:
    """
    Create a sync config.

    @raise AlreadyExists: if the instance has that biz type already.
    @raise NotFound: if the instance does not exist.
    @raise ValidationError: if the config breaks a rule.
    """
    config.validated()
    if get_instance(tx, config.instance_id) is None:
        raise NotFound(f"no instance {config.instance_id!r}")
    key = _config_key(config.instance_id, config.biz_type)
    if tx.get(Table.CONFIGS, key) is not None:
        raise AlreadyExists(
            f"{config.instance_id} already has biz type {config.biz_type}"
        )
    tx.put(Table.CONFIGS, key, _config_record(config))
    return config


def update_config(tx: Tables, config: SyncConfig) -> SyncConfig:
    """
    Replace a sync config, keeping its biz type and target.

    @raise NotFound: if there is no such config.
    @raise ValidationError: if the target would change, or a rule breaks.
    """
    current = get_config(tx, config.instance_id, config.biz_type)
    if current is None:
        raise NotFound(
            f"{config.instance_id} has no biz type {config.biz_type}"
        )
    if config.target is not current.target:
        raise ValidationError("target", "cannot be changed")
    config.validated()
    key = _config_key(config.instance_id, config.biz_type)
    tx.put(Table.CONFIGS, key, _config_record(config))
    return config


def get_config(
    tx: Tables, instance_id: str, biz_type: str
) -> SyncConfig | None:
    """Return one sync config, or L{None}."""
    key = _config_key(instance_id, biz_type)
    raw = tx.get(Table.CONFIGS, key)
    return None if raw is None else _read_config(key, raw)


def list_configs(tx: Tables, instance_id: str) -> list[SyncConfig]:
    """Return every sync config of an instance, by biz type."""
    prefix = instance_id.encode() + b"\x00"
    return [
        _read_config(k, v)
        for k, v in tx.scan(Table.CONFIGS, prefix, prefix_end(prefix))
    ]


# --- devices ----------------------------------------------------------


def _device_key(instance_id: str, device_id: str) -> bytes:
    return join(instance_id, device_id)


def get_device(tx: Tables, instance_id: str, device_id: str) -> Device | None:
    """Return what is known of a device, or L{None}."""
    key = _device_key(instance_id, device_id)
    raw = tx.get(Table.DEVICES, key)
    if raw is None:
        return None
    r = unpack(Table.DEVICES, key, raw)
    return Device(
        instance_id=instance_id,
        device_id=device_id,
        secret_hash=r["secret"],
        user_id=r["user"],
        session_validated=r["validated"],
        os_type=r["os"],
        app_version=r["app"],
        first_seen_ms=r["first"],
        last_seen_ms=r["last"],
    )


def save_device(tx: Tables, device: Device) -> Device:
    """
    Record a device, keeping its user index in step.

    The first client to present a device id binds it to its secret; a
    later record with another secret is refused.

    @raise DeviceClaimed: if the device id belongs to another secret.
    """
    check_instance_id(device.instance_id)
    check_link("device_id", device.device_id)
    if device.user_id:
        check_link("user_id", device.user_id)
    old = get_device(tx, device.instance_id, device.device_id)
    if old is not None:
        if old.secret_hash and old.secret_hash != device.secret_hash:
            raise DeviceClaimed(
                f"device {device.device_id!r} is bound to another client"
            )
        if old.user_id and old.user_id != device.user_id:
            tx.delete(
                Table.USERS,
                join(device.instance_id, old.user_id, device.device_id),
            )
        first = old.first_seen_ms or device.first_seen_ms
    else:
        first = device.first_seen_ms or device.last_seen_ms
    if device.user_id:
        tx.put(
            Table.USERS,
            join(device.instance_id, device.user_id, device.device_id),
            u64(device.last_seen_ms),
        )
    tx.put(
        Table.DEVICES,
        _device_key(device.instance_id, device.device_id),
        pack(
            {
                "secret": device.secret_hash,
                "user": device.user_id,
                "validated": device.session_validated,
                "os": device.os_type,
                "app": device.app_version,
                "first": first,
                "last": device.last_seen_ms,
            }
        ),
    )
    return get_device(tx, device.instance_id, device.device_id) or device


def devices_of_user(
    tx: Tables, instance_id: str, user_id: str
) -> list[Device]:
    """Return the devices bound to a user, most recently seen first."""
    prefix = join(instance_id, user_id) + b"\x00"
    ids = [
        k[len(prefix) :].decode()
        for k, _ in tx.scan(Table.USERS, prefix, prefix_end(prefix))
    ]
    found = [get_device(tx, instance_id, d) for d in ids]
    devices = [d for d in found if d is not None]
    return sorted(devices, key=lambda d: d.last_seen_ms, reverse=True)
