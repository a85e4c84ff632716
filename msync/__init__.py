"""
msync: a server-to-device data sync service.

Backends hand msync changes (oplogs) for a user, a device or every device;
msync stores them durably and pushes them to apps over TLS, in order.
"""

__version__ = "0.1.0"
