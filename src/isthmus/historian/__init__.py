"""Historian: a :class:`~isthmus.historian.base.Store` interface and its backends."""
