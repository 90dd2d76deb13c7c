"""Retention classes in the config, and how a bucketed query is split between tiers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from isthmus.connectors.registry import default_connectors, source_models
from isthmus.historian.duckdb.tiers import HOUR_NS, MINUTE_NS, ceil_to, floor_to, plan
from isthmus.model.config import RetentionConfig, StorageConfig
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config

DAY = 86400.0
MODELS = source_models(default_connectors())

PLANT = """\
enterprise: acme
site: lyon
hierarchy:
  packaging:
    line1:
      filling: [filler]
storage:
  retention:
    default: {raw: 30d, 1m: 365d, 1h: 3650d}
    classes:
      fast: {raw: 7d, 1m: 90d}
sources:
  - name: plc1
    type: modbus
    host: 127.0.0.1
    tags:
      - path: packaging/line1/filling/filler/speed
        address: 0
        retention_class: fast
      - path: packaging/line1/filling/filler/temp
        address: 2
        retention_class: CLS
"""


def test_bare_duration_is_the_default_raw_retention() -> None:
    storage = StorageConfig.model_validate({"retention": "90d"})
    assert storage.retention.default.raw == 90 * DAY
    assert storage.retention.default.minute == 365 * DAY
    assert storage.retention.classes == {}
    # longer than the default rollups: they stretch to keep at least as long
    long = StorageConfig.model_validate({"retention": "4000d"}).retention.default
    assert long.raw == long.minute == long.hour == 4000 * DAY


def test_tiers_left_out_are_stretched_to_the_finer_one() -> None:
    policy = RetentionConfig.model_validate({"default": {"raw": "400d"}}).default
    assert policy.seconds() == {"raw": 400 * DAY, "1m": 400 * DAY, "1h": 3650 * DAY}
    forever = RetentionConfig.model_validate({"default": {"raw": None}}).default
    assert forever.seconds() == {"raw": None, "1m": None, "1h": None}


def test_default_when_absent() -> None:
    policy = StorageConfig().retention.policy(None)
    assert policy.seconds() == {"raw": 30 * DAY, "1m": 365 * DAY, "1h": 3650 * DAY}


def test_classes_and_null_means_forever() -> None:
    r = RetentionConfig.model_validate(
        {"default": {"raw": "2d"}, "classes": {"fast": {"raw": "1d", "1m": "7d", "1h": None}}}
    )
    assert r.policy("fast").seconds() == {"raw": DAY, "1m": 7 * DAY, "1h": None}
    assert r.policy("default").raw == 2 * DAY
    assert r.names() == {"default", "fast"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"default": {"raw": "400d", "1m": "30d"}}, "raw <= 1m <= 1h"),
        ({"classes": {"default": {}}}, "retention.default"),
        ({"classes": {"bad name": {}}}, "not a valid name"),
        ({"default": {"raw": "soon"}}, "not a duration"),
        ({"default": {"2m": "1d"}}, "Extra inputs"),
        ("x", "not a duration"),
    ],
)
def test_bad_retention_is_refused(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        StorageConfig.model_validate({"retention": value})
    assert message in str(info.value)


def test_tag_retention_class_loads() -> None:
    plant, sources = load_plant_config(PLANT.replace("CLS", "null"), "plant.yaml", MODELS)
    assert [t.retention_class for t in sources[0].tags] == ["fast", None]
    assert plant.storage.retention.policy("fast").raw == 7 * DAY


def test_unknown_retention_class_names_the_tag_line() -> None:
    text = PLANT.replace("CLS", "slow")
    line = text.splitlines().index("        retention_class: slow") + 1
    with pytest.raises(ConfigError) as info:
        load_plant_config(text, "plant.yaml", MODELS)
    (issue,) = [str(i) for i in info.value.issues]
    assert issue.startswith(f"plant.yaml:{line}: sources.0.tags.1.retention_class: ")
    assert "unknown retention class 'slow'" in issue and "default, fast" in issue


def test_bad_retention_names_the_storage_line() -> None:
    text = PLANT.replace("CLS", "fast").replace("raw: 7d, 1m: 90d", "raw: 7d, 1m: 1d")
    with pytest.raises(ConfigError) as info:
        load_plant_config(text, "plant.yaml", MODELS)
    line = text.splitlines().index("      fast: {raw: 7d, 1m: 1d}") + 1
    (issue,) = [str(i) for i in info.value.issues]
    assert issue.startswith(f"plant.yaml:{line}: storage.retention.classes.fast: ")


# -- planning a bucketed query ------------------------------------------------------------

T = 1_700_000_000 * 10**9  # on neither grid
WM = {"1m": floor_to(T + 5 * HOUR_NS + 17 * MINUTE_NS, MINUTE_NS), "1h": ceil_to(T, HOUR_NS)}


def covers(segments: list[tuple[str, int, int]], start: int, end: int) -> bool:
    """The segments tile [start, end) in order, without gap or overlap."""
    at = start
    for _, lo, hi in segments:
        if lo != at or hi <= lo:
            return False
        at = hi
    return at == end


@pytest.mark.parametrize("width", [MINUTE_NS, 5 * MINUTE_NS, HOUR_NS, 24 * HOUR_NS, 7 * 10**9])
def test_plan_tiles_the_range(width: int) -> None:
    start, end = T - 3 * HOUR_NS, T + 9 * HOUR_NS + 123
    segments = plan(start, end, width, WM)
    assert covers(segments, start, end)
    for source, lo, hi in segments:
        if source != "raw":
            grid = HOUR_NS if source == "1h" else MINUTE_NS
            assert lo % grid == 0 and hi % grid == 0 and hi <= WM[source]
            assert width % grid == 0


def test_plan_prefers_the_coarsest_tier_and_raw_after_the_watermarks() -> None:
    start, end = T - 3 * HOUR_NS, T + 9 * HOUR_NS
    segments = plan(start, end, HOUR_NS, WM)
    sources = [s for s, _, _ in segments]
    assert "1h" in sources and "1m" in sources
    assert segments[-1][0] == "raw" and segments[-1][1] == WM["1m"]
    assert plan(start, end, 7 * 10**9, WM) == [("raw", start, end)]
    assert plan(start, end, HOUR_NS, {"1m": None, "1h": None}) == [("raw", start, end)]
    assert plan(start, start, HOUR_NS, WM) == []


def test_grid_helpers_floor_and_ceil_before_1970() -> None:
    assert floor_to(-1, MINUTE_NS) == -MINUTE_NS
    assert ceil_to(-1, MINUTE_NS) == 0
    assert ceil_to(MINUTE_NS, MINUTE_NS) == MINUTE_NS
