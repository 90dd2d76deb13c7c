"""What a supervised link raises when its session ends."""

from __future__ import annotations


class LinkLost(Exception):
    """A session with a device or broker ended; the message says why."""
