"""The C{twistd msync} plugin: one declaration naming L{msync.tap}."""

from twisted.application.service import ServiceMaker

msync = ServiceMaker(
    "msync",
    "msync.tap",
    "Server-to-device data sync: durable ordered oplogs pushed over TLS",
    "msync",
)
