"""Observability used by every layer: the event log, self-metrics, burst logging.

Imports nothing above :mod:`isthmus.model`."""
