"""The REST API and live stream (FastAPI); OpenAPI is the contract."""

from isthmus.api.app import create_app
from isthmus.api.context import ApiContext

__all__ = ["ApiContext", "create_app"]
