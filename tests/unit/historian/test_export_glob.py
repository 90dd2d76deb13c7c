"""The ``--tags`` glob of ``isthmus export``, time parsing and day splitting (pure)."""

from __future__ import annotations

import pytest

from isthmus.historian.export import (
    DAY_NS,
    check_range,
    compile_glob,
    days_of,
    match_tags,
    parse_when,
    site_of,
)
from isthmus.model.errors import IsthmusError

PATHS = {
    "acme/lyon/utilities/boiler/b1/pump1/flow": 1,
    "acme/lyon/utilities/boiler/b1/pump1/temp": 2,
    "acme/lyon/utilities/boiler/b1/pump10/flow": 3,
    "acme/lyon/packaging/line1/filling/filler/speed": 4,
    "acme/paris/utilities/boiler/b2/pump1/flow": 5,
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("acme/lyon/utilities/**", [1, 2, 3]),
        ("acme/lyon/utilities/*", [1, 2, 3]),  # '*' crosses '/'
        ("*/pump1/*", [1, 2, 5]),
        ("*/pump1?/*", [3]),
        ("*/flow", [1, 3, 5]),
        ("acme/*/utilities/**/flow", [1, 3, 5]),
        ("acme/[lp]*/packaging/**", [4]),
        ("acme/[!l]*/**", [5]),
        ("acme/lyon/utilities", [1, 2, 3]),  # no wildcard: the subtree
        ("/acme/lyon/utilities/", [1, 2, 3]),  # surrounding slashes are ignored
        ("acme/lyon/utilities/boiler/b1/pump1/flow", [1]),  # no wildcard: exact path
        ("acme/lyon/util", []),  # a subtree is whole segments, not a prefix
        ("ACME/**", []),  # case-sensitive
        ("*", [1, 2, 3, 4, 5]),
        ("**", [1, 2, 3, 4, 5]),
    ],
)
def test_glob(pattern: str, expected: list[int]) -> None:
    assert sorted(match_tags(pattern, PATHS).values()) == expected


def test_no_glob_selects_every_tag_sorted_by_path() -> None:
    selected = match_tags(None, PATHS)
    assert list(selected) == sorted(PATHS)


@pytest.mark.parametrize("pattern", ["", "  ", "/", "acme//lyon/*"])
def test_bad_globs(pattern: str) -> None:
    with pytest.raises(IsthmusError, match="--tags"):
        compile_glob(pattern)


def test_parse_when() -> None:
    now = 1_000 * DAY_NS
    assert parse_when("now", now, "--to") == now
    assert parse_when("-1d", now, "--from") == now - DAY_NS
    assert parse_when("1d", now, "--from") == now - DAY_NS  # bare duration: ago
    assert parse_when("2026-11-21", now, "--from") == 1_795_219_200 * 10**9
    assert parse_when("2026-11-21T06:00:00Z", now, "--from") == (1_795_219_200 + 6 * 3600) * 10**9
    for bad in ("yesterday", "2026-13-01", "", "-1 parsec"):
        with pytest.raises(IsthmusError, match="--from"):
            parse_when(bad, now, "--from")


def test_check_range() -> None:
    check_range(0, 1)
    with pytest.raises(IsthmusError, match="must be before"):
        check_range(5, 5)
    with pytest.raises(IsthmusError, match="must be before"):
        check_range(6, 5)


def test_days_of_splits_on_utc_midnight() -> None:
    d = 20_000 * DAY_NS
    assert days_of(d, d + DAY_NS) == [(d, d, d + DAY_NS)]
    assert days_of(d + 5, d + DAY_NS + 7) == [
        (d, d + 5, d + DAY_NS),
        (d + DAY_NS, d + DAY_NS, d + DAY_NS + 7),
    ]
    assert days_of(-5, 5) == [(-DAY_NS, -5, 0), (0, 0, 5)]


def test_site_of() -> None:
    assert site_of("acme/lyon/a/l/c/e/t", None) == "lyon"
    assert site_of("acme/lyon/a/l/c/e/t", "hub") == "hub"
    assert site_of("loose", None) == "unknown"
