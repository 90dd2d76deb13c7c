"""The control tower web UI: static HTML, JS and CSS served by the API (no build step)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""index.html, app.js, app.css."""
