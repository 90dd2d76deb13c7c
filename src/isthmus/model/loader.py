"""Parse and validate a plant configuration, naming file, line and field for every error.

The YAML is composed into a node tree first so that each value keeps its line; pydantic
validation errors are then mapped back to the line of the offending key (or of its
nearest existing parent when a required key is missing).  Pure: takes text, not files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from isthmus.model.config import PlantConfig, SourceConfig
from isthmus.model.errors import ConfigError, ConfigIssue

Loc = tuple[str | int, ...]


class _Lines:
    def __init__(self) -> None:
        self.by_path: dict[Loc, int] = {}

    def line_for(self, loc: Loc) -> int:
        while loc:
            if loc in self.by_path:
                return self.by_path[loc]
            loc = loc[:-1]
        return self.by_path.get((), 1)


def _to_python(node: yaml.Node, loc: Loc, lines: _Lines) -> Any:
    lines.by_path.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if not isinstance(key_node, yaml.ScalarNode)
                else key_node.value
            )
            key_loc = (*loc, str(key))
            lines.by_path[key_loc] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, key_loc, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    # Scalars: let the safe constructor resolve ints, floats, bools, nulls.
    return yaml.SafeLoader(yaml.serialize(node)).get_single_data()


def parse_yaml(text: str, filename: str) -> tuple[Any, _Lines]:
    lines = _Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        message = str(exc.problem or exc).strip()
        if exc.context and exc.context_mark is not None:
            message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise ConfigError([ConfigIssue(filename, line, "(yaml)", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(filename, 1, "(yaml)", str(exc))]) from None
    if node is None:
        raise ConfigError([ConfigIssue(filename, 1, "(file)", "the file is empty")])
    return _to_python(node, (), lines), lines


def _loc_str(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) if loc else "(root)"


def _issues(exc: ValidationError, prefix: Loc, lines: _Lines, filename: str) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        # Drop pydantic's internal markers (e.g. union branch names) from the path.
        loc = (*prefix, *(p for p in err["loc"] if not str(p).startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the configuration reference)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        issues.append(ConfigIssue(filename, lines.line_for(loc), _loc_str(loc), message))
    return issues


def load_plant_config(
    text: str,
    filename: str,
    source_models: Mapping[str, type[SourceConfig]],
) -> tuple[PlantConfig, list[SourceConfig]]:
    """Validate a whole plant config; raise :class:`ConfigError` listing every problem.

    ``source_models`` maps each known ``type:`` to its config model (the connector
    registry provides it), so adding a protocol never changes this module.
    """
    data, lines = parse_yaml(text, filename)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(filename, 1, "(root)", "the top level must be a mapping")])
    issues: list[ConfigIssue] = []
    plant: PlantConfig | None = None
    try:
        plant = PlantConfig.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issues(exc, (), lines, filename))

    indexed: list[tuple[int, SourceConfig]] = []
    raw_sources = data.get("sources", [])
    if isinstance(raw_sources, list):
        for i, raw in enumerate(raw_sources):
            loc: Loc = ("sources", i)
            if not isinstance(raw, dict):
                continue  # already reported by PlantConfig
            kind = raw.get("type")
            model = source_models.get(str(kind)) if kind is not None else None
            if model is None:
                known = ", ".join(sorted(source_models)) or "(none registered)"
                where = (*loc, "type") if kind is not None else loc
                what = f"unknown source type {kind!r}" if kind is not None else "missing"
                issues.append(
                    ConfigIssue(
                        filename,
                        lines.line_for(where),
                        _loc_str((*loc, "type")),
                        f"{what}; known types: {known}",
                    )
                )
                continue
            try:
                indexed.append((i, model.model_validate(raw)))
            except ValidationError as exc:
                issues.extend(_issues(exc, loc, lines, filename))

    if plant is not None:
        issues.extend(_cross_check(plant, indexed, lines, filename))
    if issues:
        raise ConfigError(issues)
    assert plant is not None
    return plant, [source for _, source in indexed]


def _cross_check(
    plant: PlantConfig,
    sources: list[tuple[int, SourceConfig]],
    lines: _Lines,
    filename: str,
) -> list[ConfigIssue]:
    """Rules that span sections: unique names, tags placed on declared equipment,
    retention classes that storage defines."""
    issues: list[ConfigIssue] = []
    equipment = plant.equipment_paths()
    seen_sources: set[str] = set()
    seen_tags: dict[str, str] = {}

    def issue(loc: Loc, message: str) -> None:
        issues.append(ConfigIssue(filename, lines.line_for(loc), _loc_str(loc), message))

    for i, source in sources:
        if source.name in seen_sources:
            issue(("sources", i, "name"), f"duplicate source name {source.name!r}")
        seen_sources.add(source.name)
        for t, tag in enumerate(source.tags):
            loc: Loc = ("sources", i, "tags", t, "path")
            eq = tag.path.rsplit("/", 1)[0]
            if eq not in equipment:
                issue(loc, f"equipment {eq!r} is not declared in the hierarchy")
            if tag.path in seen_tags:
                issue(loc, f"tag {tag.path!r} is already mapped by source {seen_tags[tag.path]!r}")
            kept = plant.storage.retention.names()
            if tag.retention_class is not None and tag.retention_class not in kept:
                issue(
                    ("sources", i, "tags", t, "retention_class"),
                    f"unknown retention class {tag.retention_class!r}; "
                    f"storage.retention defines: {', '.join(sorted(kept))}",
                )
            seen_tags[tag.path] = source.name
        for where, message in source.reference_issues():
            issue(("sources", i, *where), message)
    return issues
