"""Tags: the catalog, the hierarchy tree, last values and history.

Every route applies the caller's scopes: lists and the tree hold only what the caller may
see, and a single tag outside them answers 404 like an unknown one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request

from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.problems import ApiProblem, bad_param, time_param
from isthmus.api.schemas import (
    DURATION_PATTERN,
    PATH_PATTERN,
    TIME_PATTERN,
    Bucket,
    BucketedSamples,
    HierarchyNode,
    InterpolatedSamples,
    LastValue,
    LastValues,
    RawSamples,
    Sample,
    TagOut,
    finite,
)
from isthmus.api.scopes import scoped_entry, visible_entries
from isthmus.historian.queries import extended_buckets, interpolated
from isthmus.historian.text import NotNumericError
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType
from isthmus.model.durations import format_ns, parse_duration_ns
from isthmus.model.quality import quality_name
from isthmus.model.values import typed_value
from isthmus.security.rbac import Action, Principal, Resource

router = APIRouter(prefix="/api", tags=["tags"])

TagsReader = Annotated[Principal, Depends(require(Resource.TAGS, Action.READ))]
HistoryReader = Annotated[Principal, Depends(require(Resource.HISTORY, Action.READ))]

_PREFIX_HELP = "UNS path prefix, e.g. acme/plant1; all tags if absent"
_TIME_HELP = "ISO 8601 (2026-11-22T10:00:00Z) or relative (-10m, now)"

TagPath = Annotated[
    str, Path(pattern=PATH_PATTERN, description="full UNS path of the tag", max_length=1024)
]

LEVELS = ("enterprise", "site", "area", "line", "cell", "equipment")
MAX_BUCKETS = 10_000
MAX_LIMIT = 100_000
_UNKNOWN = (404, "unknown tag (or outside the caller's scopes)")
_NO_SAMPLE = (404, "unknown tag (or outside the caller's scopes), or no sample yet")


def tag_out(entry: CatalogEntry, labels: Mapping[int, str] | None = None) -> TagOut:
    """``labels``: enumeration labels read from the device (the config's win)."""
    cfg = entry.config
    return TagOut(
        path=entry.path,
        name=entry.path.rsplit("/", 1)[-1],
        equipment=entry.path.rsplit("/", 1)[0],
        unit=cfg.unit,
        data_type=str(cfg.data_type),
        value_type=str(cfg.value_type),
        description=cfg.description,
        range=cfg.range,
        writable=cfg.writable,
        criticality=str(cfg.criticality),
        source=entry.source,
        enum=cfg.enum if cfg.enum is not None else (dict(labels) if labels else None),
        write_limits=cfg.write_limits,
        max_step=cfg.max_step,
        min_interval=cfg.min_interval,
    )


def build_hierarchy(entries: Iterable[CatalogEntry]) -> list[HierarchyNode]:
    """The tree of ``entries``: a node exists only above a tag that is listed (so a
    caller's tree holds its scopes and the way down to them, nothing beside)."""
    roots: list[HierarchyNode] = []
    index: dict[str, HierarchyNode] = {}
    for entry in entries:
        parts = entry.path.split("/")
        siblings = roots
        for depth, name in enumerate(parts[:-1]):
            path = "/".join(parts[: depth + 1])
            node = index.get(path)
            if node is None:
                level = LEVELS[depth] if depth < len(LEVELS) else "node"
                node = HierarchyNode(name=name, level=level, path=path)
                index[path] = node
                siblings.append(node)
            siblings = node.children
        siblings.append(
            HierarchyNode(
                name=parts[-1],
                level="tag",
                path=entry.path,
                unit=entry.config.unit,
                data_type=str(entry.config.data_type),
                value_type=str(entry.config.value_type),
            )
        )
    return roots


def _last_values(catalog: TagCatalog, batch: Batch) -> list[LastValue]:
    out: list[LastValue] = []
    for tag_id, ts, value, quality, text in zip(
        batch.tag_id.tolist(),
        batch.ts.tolist(),
        batch.value.tolist(),
        batch.quality.tolist(),
        batch.texts(),
        strict=True,
    ):
        entry = catalog.by_id(tag_id)
        if entry is None:
            continue
        out.append(
            LastValue(
                path=entry.path,
                value=typed_value(value, entry.config.value_type, text),
                quality=quality_name(quality),
                quality_code=quality,
                timestamp=format_ns(ts),
            )
        )
    out.sort(key=lambda v: v.path)
    return out


@router.get(
    "/tags",
    summary="Every tag the caller may see, optionally under a UNS path prefix",
    responses=guarded(Resource.TAGS, Action.READ, 422),
)
async def list_tags(
    ctx: Ctx,
    principal: TagsReader,
    prefix: Annotated[
        str | None, Query(max_length=1024, description="UNS path prefix, e.g. acme/plant1")
    ] = None,
) -> list[TagOut]:
    labels = ctx.enum_labels()
    return [
        tag_out(e, labels.get(e.tag_id)) for e in visible_entries(ctx.catalog, principal, prefix)
    ]


@router.get(
    "/hierarchy",
    summary="The ISA-95 tree: enterprise → … → equipment → tags (what the caller may see)",
    responses=guarded(Resource.TAGS, Action.READ),
)
async def hierarchy(ctx: Ctx, principal: TagsReader) -> list[HierarchyNode]:
    return build_hierarchy(visible_entries(ctx.catalog, principal))


@router.get(
    "/last",
    summary="Last value of every tag under a prefix that the caller may see, in one call",
    responses=guarded(Resource.TAGS, Action.READ, 422),
)
async def last_many(
    ctx: Ctx,
    principal: TagsReader,
    prefix: Annotated[
        str | None, Query(max_length=1024, description="UNS path prefix; all tags if empty")
    ] = None,
) -> LastValues:
    ids = [e.tag_id for e in visible_entries(ctx.catalog, principal, prefix)]
    if not ids:
        return LastValues(values=[])
    batch = await asyncio.to_thread(ctx.store.last, ids)
    return LastValues(values=_last_values(ctx.catalog, batch))


@router.get(
    "/tags/{path:path}/last",
    summary="The newest sample of one tag",
    responses=guarded(Resource.TAGS, Action.READ, _NO_SAMPLE, 422),
)
async def last_one(path: TagPath, request: Request, ctx: Ctx, principal: TagsReader) -> LastValue:
    entry = scoped_entry(ctx, principal, path, request.url.path)
    batch = await asyncio.to_thread(ctx.store.last, [entry.tag_id])
    values = _last_values(ctx.catalog, batch)
    if not values:
        raise ApiProblem(404, f"tag {entry.path!r} has no sample yet")
    return values[0]


def not_numeric(path: str) -> ApiProblem:
    """422 for an aggregate or an interpolation asked of a string tag."""
    return ApiProblem(422, f"tag {path} holds strings; aggregates need a numeric tag")


@router.get(
    "/tags/{path:path}/samples",
    summary="History of one tag: raw samples, or avg/min/max/count per time bucket",
    responses=guarded(Resource.HISTORY, Action.READ, _UNKNOWN, 422),
    response_model=RawSamples | BucketedSamples,
)
async def samples(
    path: TagPath,
    request: Request,
    ctx: Ctx,
    principal: HistoryReader,
    from_: Annotated[
        str, Query(alias="from", pattern=TIME_PATTERN, max_length=64, description=_TIME_HELP)
    ] = "-15m",
    to: Annotated[str, Query(pattern=TIME_PATTERN, max_length=64, description=_TIME_HELP)] = "now",
    bucket: Annotated[
        str | None,
        Query(
            pattern=DURATION_PATTERN,
            max_length=64,
            description="bucket width such as 10s or 1m; raw samples if absent",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="most raw samples returned (oldest first)")
    ] = 10_000,
    extended: Annotated[
        bool,
        Query(description="with bucket: add time-weighted average and standard deviation"),
    ] = False,
) -> RawSamples | BucketedSamples:
    entry = scoped_entry(ctx, principal, path, request.url.path)
    now = ctx.clock.now_ns()
    start = time_param("from", from_, now)
    end = time_param("to", to, now)
    if start >= end:
        raise bad_param("from", f"must be before 'to' ({format_ns(start)} >= {format_ns(end)})")
    unit = entry.config.unit
    if bucket is not None:
        if entry.config.value_type is DataType.STRING:
            raise not_numeric(entry.path)
        try:
            width = parse_duration_ns(bucket)
        except ValueError as exc:
            raise bad_param("bucket", str(exc)) from None
        if width <= 0:
            raise bad_param("bucket", "must be longer than zero")
        if (end - start) // width > MAX_BUCKETS:
            raise bad_param(
                "bucket", f"{bucket!r} makes more than {MAX_BUCKETS} buckets; use a wider one"
            )
        if extended:
            try:
                ext = await asyncio.to_thread(
                    extended_buckets, ctx.store, entry.tag_id, start, end, width
                )
            except NotNumericError:  # the store holds strings for it (type changed)
                raise not_numeric(entry.path) from None
            except ValueError as exc:
                raise bad_param("from", str(exc)) from None
            extended_rows = [
                Bucket(
                    timestamp=format_ns(ts),
                    avg=finite(avg),
                    min=finite(lo),
                    max=finite(hi),
                    count=count,
                    twa=finite(twa),
                    stddev=finite(sd),
                )
                for ts, avg, lo, hi, count, twa, sd in zip(
                    ext.bucket_ns.tolist(),
                    ext.avg.tolist(),
                    ext.min.tolist(),
                    ext.max.tolist(),
                    ext.count.tolist(),
                    ext.twa.tolist(),
                    ext.stddev.tolist(),
                    strict=True,
                )
            ]
            return BucketedSamples(
                path=entry.path, unit=unit, bucket=bucket.strip(), buckets=extended_rows
            )
        try:
            agg = await asyncio.to_thread(ctx.store.buckets, entry.tag_id, start, end, width)
        except NotNumericError:  # the store holds strings for it (type changed)
            raise not_numeric(entry.path) from None
        buckets = [
            Bucket(
                timestamp=format_ns(ts),
                avg=finite(avg),
                min=finite(lo),
                max=finite(hi),
                count=count,
            )
            for ts, avg, lo, hi, count in zip(
                agg.bucket_ns.tolist(),
                np.asarray(agg.avg).tolist(),
                np.asarray(agg.min).tolist(),
                np.asarray(agg.max).tolist(),
                agg.count.tolist(),
                strict=True,
            )
        ]
        return BucketedSamples(path=entry.path, unit=unit, bucket=bucket.strip(), buckets=buckets)
    batch = await asyncio.to_thread(ctx.store.raw, entry.tag_id, start, end, limit)
    data_type = entry.config.value_type
    rows = [
        Sample(
            timestamp=format_ns(ts),
            value=typed_value(value, data_type, text),
            quality=quality_name(quality),
        )
        for ts, value, quality, text in zip(
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            batch.texts(),
            strict=True,
        )
    ]
    return RawSamples(path=entry.path, unit=unit, samples=rows)


@router.get(
    "/tags/{path:path}/interpolated",
    summary="Values of one tag at fixed intervals: the value in force, or linear",
    responses=guarded(Resource.HISTORY, Action.READ, _UNKNOWN, 422),
)
async def interpolated_values(
    path: TagPath,
    request: Request,
    ctx: Ctx,
    principal: HistoryReader,
    interval: Annotated[
        str,
        Query(pattern=DURATION_PATTERN, max_length=64, description="spacing of the instants: 1m"),
    ],
    from_: Annotated[
        str, Query(alias="from", pattern=TIME_PATTERN, max_length=64, description=_TIME_HELP)
    ] = "-15m",
    to: Annotated[str, Query(pattern=TIME_PATTERN, max_length=64, description=_TIME_HELP)] = "now",
    method: Annotated[
        Literal["previous", "linear"],
        Query(description="previous: the value in force; linear: between the samples around"),
    ] = "previous",
) -> InterpolatedSamples:
    entry = scoped_entry(ctx, principal, path, request.url.path)
    if entry.config.value_type is DataType.STRING:
        raise not_numeric(entry.path)
    now = ctx.clock.now_ns()
    start = time_param("from", from_, now)
    end = time_param("to", to, now)
    if start >= end:
        raise bad_param("from", f"must be before 'to' ({format_ns(start)} >= {format_ns(end)})")
    try:
        step = parse_duration_ns(interval)
    except ValueError as exc:
        raise bad_param("interval", str(exc)) from None
    if step <= 0:
        raise bad_param("interval", "must be longer than zero")
    if (end - start) // step > MAX_LIMIT:
        raise bad_param("interval", f"makes more than {MAX_LIMIT} values; use a wider one")
    try:
        at, values, quality = await asyncio.to_thread(
            interpolated, ctx.store, entry.tag_id, start, end, step, method
        )
    except ValueError as exc:
        raise bad_param("from", str(exc)) from None
    data_type = entry.config.value_type if method == "previous" else DataType.FLOAT64
    rows = [
        Sample(timestamp=format_ns(t), value=typed_value(v, data_type), quality=quality_name(q))
        for t, v, q in zip(at.tolist(), values.tolist(), quality.tolist(), strict=True)
    ]
    return InterpolatedSamples(
        path=entry.path,
        unit=entry.config.unit,
        interval=interval.strip(),
        method=method,
        values=rows,
    )
