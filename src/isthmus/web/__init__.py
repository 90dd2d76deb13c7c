"""The control tower web UI: static HTML, JS and CSS served by the API (no build step)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""index.html and app.css, js/ (ES modules: main.js, router.js, pages/, components/),
css/, vendor/uplot/; see docs/decisions/0009-ui-structure.md."""
