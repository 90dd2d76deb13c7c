"""Connectors: one folder per protocol, each registering a :class:`ConnectorSpec`."""
