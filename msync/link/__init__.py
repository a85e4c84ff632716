"""The Twisted side of device connections: a thin protocol and factory."""
