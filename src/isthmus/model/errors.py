"""Isthmus's own small exception tree; third-party errors are translated at the edges."""

from __future__ import annotations

from dataclasses import dataclass


class IsthmusError(Exception):
    """Base of every error Isthmus raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class ConfigError(IsthmusError):
    """A configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConnectionFailed(IsthmusError):
    """A device or server could not be reached or answered badly."""


class StoreError(IsthmusError):
    """The historian refused or failed an operation."""
