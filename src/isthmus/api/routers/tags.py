"""Tags: the catalog, the hierarchy tree, last values and history."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query

from isthmus.api.deps import Ctx, require_user
from isthmus.api.paths import entries_under
from isthmus.api.problems import ApiProblem, Problem, bad_param
from isthmus.api.schemas import (
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
from isthmus.historian.queries import extended_buckets, interpolated
from isthmus.historian.text import NotNumericError
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType
from isthmus.model.durations import format_ns, parse_duration_ns, parse_time_ns
from isthmus.model.quality import quality_name
from isthmus.model.values import typed_value

router = APIRouter(prefix="/api", tags=["tags"], dependencies=[Depends(require_user)])

LEVELS = ("enterprise", "site", "area", "line", "cell", "equipment")
MAX_BUCKETS = 10_000
MAX_LIMIT = 100_000
_NS_MAX = 2**63 - 1
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown tag, or no sample yet"}
}
_BAD_PARAM: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "invalid parameter"}
}


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
    )


def build_hierarchy(catalog: TagCatalog) -> list[HierarchyNode]:
    roots: list[HierarchyNode] = []
    index: dict[str, HierarchyNode] = {}
    for entry in catalog:
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


def _entry(ctx_catalog: TagCatalog, path: str) -> CatalogEntry:
    entry = ctx_catalog.by_path(path)
    if entry is None:
        raise ApiProblem(404, f"unknown tag {path!r}")
    return entry


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


@router.get("/tags", summary="Every tag, optionally under a UNS path prefix")
async def list_tags(
    ctx: Ctx,
    prefix: Annotated[str | None, Query(description="UNS path prefix, e.g. acme/plant1")] = None,
) -> list[TagOut]:
    labels = ctx.enum_labels()
    return [tag_out(e, labels.get(e.tag_id)) for e in entries_under(ctx.catalog, prefix)]


@router.get("/hierarchy", summary="The ISA-95 tree: enterprise → … → equipment → tags")
async def hierarchy(ctx: Ctx) -> list[HierarchyNode]:
    return build_hierarchy(ctx.catalog)


@router.get("/last", summary="Last value of every tag under a prefix, in one call")
async def last_many(
    ctx: Ctx,
    prefix: Annotated[str | None, Query(description="UNS path prefix; all tags if empty")] = None,
) -> LastValues:
    ids = [e.tag_id for e in entries_under(ctx.catalog, prefix)]
    if not ids:
        return LastValues(values=[])
    batch = await asyncio.to_thread(ctx.store.last, ids)
    return LastValues(values=_last_values(ctx.catalog, batch))


@router.get("/tags/{path:path}/last", summary="The newest sample of one tag", responses=_NOT_FOUND)
async def last_one(path: str, ctx: Ctx) -> LastValue:
    entry = _entry(ctx.catalog, path)
    batch = await asyncio.to_thread(ctx.store.last, [entry.tag_id])
    values = _last_values(ctx.catalog, batch)
    if not values:
        raise ApiProblem(404, f"tag {entry.path!r} has no sample yet")
    return values[0]


def not_numeric(path: str) -> ApiProblem:
    """422 for an aggregate or an interpolation asked of a string tag."""
    return ApiProblem(422, f"tag {path} holds strings; aggregates need a numeric tag")


def _time_param(name: str, text: str, now_ns: int) -> int:
    try:
        ns = parse_time_ns(text, now_ns)
    except (ValueError, OverflowError) as exc:
        raise bad_param(name, str(exc)) from None
    if not 0 <= ns <= _NS_MAX:
        raise bad_param(name, f"{text!r} is outside the representable time range")
    return ns


@router.get(
    "/tags/{path:path}/samples",
    summary="History of one tag: raw samples, or avg/min/max/count per time bucket",
    responses={**_NOT_FOUND, **_BAD_PARAM},
    response_model=RawSamples | BucketedSamples,
)
async def samples(
    path: str,
    ctx: Ctx,
    from_: Annotated[
        str, Query(alias="from", description="ISO 8601 or relative (-10m, now)")
    ] = "-15m",
    to: Annotated[str, Query(description="ISO 8601 or relative (-10m, now)")] = "now",
    bucket: Annotated[
        str | None, Query(description="bucket width such as 10s or 1m; raw samples if absent")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="most raw samples returned (oldest first)")
    ] = 10_000,
    extended: Annotated[
        bool,
        Query(description="with bucket: add time-weighted average and standard deviation"),
    ] = False,
) -> RawSamples | BucketedSamples:
    entry = _entry(ctx.catalog, path)
    now = ctx.clock.now_ns()
    start = _time_param("from", from_, now)
    end = _time_param("to", to, now)
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
    responses={**_NOT_FOUND, **_BAD_PARAM},
)
async def interpolated_values(
    path: str,
    ctx: Ctx,
    interval: Annotated[str, Query(description="spacing of the instants, e.g. 1m")],
    from_: Annotated[
        str, Query(alias="from", description="ISO 8601 or relative (-10m, now)")
    ] = "-15m",
    to: Annotated[str, Query(description="ISO 8601 or relative (-10m, now)")] = "now",
    method: Annotated[
        Literal["previous", "linear"],
        Query(description="previous: the value in force; linear: between the samples around"),
    ] = "previous",
) -> InterpolatedSamples:
    entry = _entry(ctx.catalog, path)
    if entry.config.value_type is DataType.STRING:
        raise not_numeric(entry.path)
    now = ctx.clock.now_ns()
    start = _time_param("from", from_, now)
    end = _time_param("to", to, now)
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
