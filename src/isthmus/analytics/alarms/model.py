"""Alarm definitions: the plant config's ``alarms:`` entries, validated, and their
expansion into addressable alarm instances.

An entry is a single alarm (``tag`` is ``area/line/cell/equipment/tag`` below the site,
or the full UNS path), or a *template* when it names ``equipment``: patterns over the
hierarchy's equipment; the template then expands, at load time, into one alarm per
matching equipment named ``NAME/area/line/cell/equipment``, its ``tag``, ``setpoint``
and expression references relative to that equipment (``tag: vibration``).

Validation errors name the field; :func:`expand_alarms` collects every cross-check
(unknown tags, a string tag with a numeric limit, a deadband that could never clear,
duplicate names) as ``(location, message)`` issues and raises them together, so
nothing is half-applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from isthmus.analytics.alarms.expression import Expression, ExpressionError, Ref, parse
from isthmus.analytics.alarms.state import BadInputPolicy, Lifecycle
from isthmus.model.config import TAG_PATH_DEPTH, DataType, TagConfig, check_segment
from isthmus.model.durations import Duration

Loc = tuple[str | int, ...]
NS = 1_000_000_000


class AlarmType(StrEnum):
    HIGH_HIGH = "high_high"
    HIGH = "high"
    LOW = "low"
    LOW_LOW = "low_low"
    DEVIATION = "deviation"
    RATE = "rate"
    DISCRETE = "discrete"
    STALE = "stale"
    EXPRESSION = "expression"


HIGH_TYPES = frozenset({AlarmType.HIGH_HIGH, AlarmType.HIGH})
LOW_TYPES = frozenset({AlarmType.LOW, AlarmType.LOW_LOW})
LIMIT_TYPES = HIGH_TYPES | LOW_TYPES | {AlarmType.DEVIATION, AlarmType.RATE}
NUMERIC_TYPES = LIMIT_TYPES


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class RateDirection(StrEnum):
    RISING = "rising"
    FALLING = "falling"
    BOTH = "both"


DEFAULT_MAX_SHELVE: dict[Priority, float] = {
    Priority.CRITICAL: 3600.0,
    Priority.HIGH: 4 * 3600.0,
    Priority.MEDIUM: 8 * 3600.0,
    Priority.LOW: 24 * 3600.0,
}
"""Longest shelving per priority (seconds): a critical alarm is hidden for an hour at most."""


class AlarmSettings(BaseModel):
    """Settings shared by every alarm (the runtime's ``alarm_settings``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_shelve: dict[Priority, Duration] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_SHELVE),
        description="longest shelving per priority (critical 1h, high 4h, medium 8h, low 24h)",
    )

    def max_shelve_ns(self, priority: Priority) -> int:
        seconds = self.max_shelve.get(priority, DEFAULT_MAX_SHELVE[priority])
        return round(seconds * NS)


def _check_path(value: str) -> str:
    parts = value.strip("/").split("/")
    if len(parts) not in (1, TAG_PATH_DEPTH, TAG_PATH_DEPTH + 2):
        raise ValueError(
            f"{value!r} is not a tag path: use area/line/cell/equipment/tag (below the "
            "site), the full UNS path, or in a template the tag name below the equipment"
        )
    for part in parts:
        check_segment(part)
    return value.strip("/")


class AlarmConfig(BaseModel):
    """One ``alarms:`` entry.  Fields are validated in order, each naming itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field(description="unique; a template's instances are NAME/EQUIPMENT")
    type: AlarmType = Field(
        description="high_high, high, low, low_low, deviation, rate, discrete, stale or expression"
    )
    equipment: list[str] | None = Field(
        default=None,
        description="template: patterns over area/line/cell/equipment (a single segment "
        "matches the equipment name, e.g. pump*); one alarm per matching equipment",
    )
    tag: str | None = Field(
        default=None,
        description="area/line/cell/equipment/tag below the site (in a template: the tag "
        "name below each equipment)",
    )
    limit: float | None = Field(
        default=None,
        description="trip threshold (limit types); largest deviation (deviation); change per "
        "second (rate)",
    )
    setpoint: str | None = Field(default=None, description="deviation: the setpoint tag")
    state: list[float] | None = Field(
        default=None, description="discrete: the value(s) that mean alarm (default true/1)"
    )
    direction: RateDirection = Field(
        default=RateDirection.BOTH, description="rate: rising, falling or both"
    )
    duration: Duration | None = Field(
        default=None, description="stale: no Good update for this long"
    )
    expression: str | None = Field(
        default=None, description="expression: a condition over tags (see docs/alarms.md)"
    )
    deadband: float = Field(
        default=0.0, ge=0, description="the condition clears this far back inside the limit"
    )
    on_delay: Duration = Field(default=0.0, description="condition must hold this long to trip")
    off_delay: Duration = Field(default=0.0, description="clear must hold this long to clear")
    latching: bool = Field(default=False, description="stays latched until acknowledged")
    priority: Priority = Field(default=Priority.MEDIUM, description="critical, high, medium, low")
    message: str = Field(default="", description="what the operator reads")
    cause: str = Field(default="", description="rationalisation: the likely cause")
    consequence: str = Field(default="", description="rationalisation: if nobody acts")
    corrective_action: str = Field(default="", description="rationalisation: what to do")
    time_to_respond: Duration | None = Field(
        default=None, description="rationalisation: how long the operator has"
    )
    suppress_when: str | None = Field(
        default=None, description="suppressed by design while this expression is true"
    )
    bad_input: BadInputPolicy = Field(
        default=BadInputPolicy.HOLD,
        description="a Bad/Uncertain input: hold the state, or raise the alarm (bad_input)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_segment(value)

    @staticmethod
    def _type(info: ValidationInfo) -> AlarmType | None:
        kind = info.data.get("type")
        return kind if isinstance(kind, AlarmType) else None

    @field_validator("equipment")
    @classmethod
    def _equipment(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("a template needs at least one equipment pattern")
        for pattern in value:
            parts = pattern.strip("/").split("/")
            if len(parts) not in (1, TAG_PATH_DEPTH - 1):
                raise ValueError(
                    f"{pattern!r}: a pattern is an equipment name (pump*) or "
                    "area/line/cell/equipment with wildcards"
                )
        return [p.strip("/") for p in value]

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if cls._type(info) not in (None, AlarmType.EXPRESSION):
                raise ValueError(f"a {info.data['type']} alarm needs a tag")
            return None
        return _check_path(value)

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = cls._type(info)
        if kind is None:
            return value
        if kind in LIMIT_TYPES and value is None:
            raise ValueError(f"a {kind} alarm needs a limit")
        if kind not in LIMIT_TYPES and value is not None:
            raise ValueError(f"a {kind} alarm takes no limit")
        if kind in (AlarmType.DEVIATION, AlarmType.RATE) and value is not None and value <= 0:
            raise ValueError(f"a {kind} limit is a positive amount")
        return value

    @field_validator("setpoint")
    @classmethod
    def _setpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        _only_for(cls._type(info), AlarmType.DEVIATION, value, "a setpoint tag", "setpoint")
        return None if value is None else _check_path(value)

    @field_validator("state", mode="before")
    @classmethod
    def _state_before(cls, value: Any) -> Any:
        if isinstance(value, bool | int | float):
            return [float(value)]
        return value

    @field_validator("state")
    @classmethod
    def _state(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        kind = cls._type(info)
        if kind is AlarmType.DISCRETE:
            if value is not None and not value:
                raise ValueError("a discrete alarm needs at least one alarm state")
            return value or [1.0]
        if kind is not None and value is not None:
            raise ValueError(f"a {kind} alarm takes no state")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = cls._type(info)
        if kind is AlarmType.STALE and not value:
            raise ValueError("a stale alarm needs a positive duration")
        _only_for(kind, AlarmType.STALE, value, "a positive duration", "duration")
        return value

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str | None, info: ValidationInfo) -> str | None:
        _only_for(cls._type(info), AlarmType.EXPRESSION, value, "an expression", "expression")
        if value is not None:
            parse(value)  # ExpressionError is a ValueError: pydantic names the field
        return value

    @field_validator("deadband")
    @classmethod
    def _deadband(cls, value: float, info: ValidationInfo) -> float:
        kind = cls._type(info)
        if kind is None or not value:
            return value
        if kind not in LIMIT_TYPES:
            raise ValueError(f"a {kind} alarm takes no deadband")
        limit = info.data.get("limit")
        if kind in (AlarmType.DEVIATION, AlarmType.RATE) and limit is not None and value >= limit:
            raise ValueError(
                f"deadband {value:g} is not smaller than the {kind} limit {limit:g}: "
                "the alarm could never clear"
            )
        return value

    @field_validator("suppress_when")
    @classmethod
    def _suppress_when(cls, value: str | None) -> str | None:
        if value is not None:
            parse(value)
        return value

    @property
    def is_template(self) -> bool:
        return self.equipment is not None


@dataclass(frozen=True, slots=True)
class AlarmDefinition:
    """One addressable alarm after template expansion, its tag references resolved to
    paths below the site (``area/line/cell/equipment/tag``)."""

    name: str
    config: AlarmConfig
    index: int
    """Position of the entry in ``alarms:`` (for error locations)."""
    tag: str | None
    setpoint: str | None
    expression: Expression | None
    suppress_when: Expression | None
    equipment: str | None
    """area/line/cell/equipment of the alarm (a template instance's equipment, or the
    equipment of its tag)."""
    template: str | None
    """The template's name for a template instance."""

    @property
    def type(self) -> AlarmType:
        return self.config.type

    @property
    def priority(self) -> Priority:
        return self.config.priority

    @property
    def area(self) -> str | None:
        return self.equipment.split("/", 1)[0] if self.equipment else None

    def inputs(self) -> list[str]:
        """The tags whose samples evaluate the condition."""
        paths = [p for p in (self.tag, self.setpoint) if p is not None]
        if self.expression is not None:
            paths += self.expression.refs()
        return list(dict.fromkeys(paths))

    def suppression_inputs(self) -> list[str]:
        return [] if self.suppress_when is None else self.suppress_when.refs()

    def lifecycle(self, settings: AlarmSettings | None = None) -> Lifecycle:
        settings = settings or AlarmSettings()
        return Lifecycle(
            alarm=self.name,
            latching=self.config.latching,
            on_delay_ns=round(self.config.on_delay * NS),
            off_delay_ns=round(self.config.off_delay * NS),
            bad_input=self.config.bad_input,
            max_shelve_ns=settings.max_shelve_ns(self.config.priority),
        )


class AlarmConfigError(ValueError):
    """Alarm definitions that cannot load: every issue as (location, message)."""

    def __init__(self, issues: list[tuple[Loc, str]]) -> None:
        self.issues = issues
        lines = [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in issues]
        super().__init__(f"{len(issues)} alarm issue(s):\n  " + "\n  ".join(lines))


def _matches(pattern: str, equipment: str) -> bool:
    parts = pattern.split("/")
    segments = equipment.split("/")
    if len(parts) == 1:
        return fnmatchcase(segments[-1], pattern)
    return len(parts) == len(segments) and all(
        fnmatchcase(s, p) for p, s in zip(parts, segments, strict=True)
    )


def parse_alarms(
    raw: Sequence[Mapping[str, Any]],
    *,
    enterprise: str,
    site: str,
    equipment: Iterable[str],
    tags: Mapping[str, TagConfig] | None = None,
    loc: Loc = ("alarms",),
) -> list[AlarmDefinition]:
    """Validate the raw ``alarms:`` entries and expand them; every problem of every entry
    is reported together in one :class:`AlarmConfigError`."""
    issues: list[tuple[Loc, str]] = []
    configs: list[AlarmConfig | None] = []
    for i, entry in enumerate(raw):
        try:
            configs.append(AlarmConfig.model_validate(entry))
        except ValidationError as exc:
            configs.append(None)
            for err in exc.errors():
                message = str(err["msg"]).removeprefix("Value error, ")
                issues.append(((*loc, i, *err["loc"]), message))
    try:
        expanded = expand_alarms(
            configs, enterprise=enterprise, site=site, equipment=equipment, tags=tags, loc=loc
        )
    except AlarmConfigError as exc:
        issues += exc.issues
        expanded = []
    if issues:
        raise AlarmConfigError(issues)
    return expanded


def expand_alarms(
    alarms: Sequence[AlarmConfig | None],
    *,
    enterprise: str,
    site: str,
    equipment: Iterable[str],
    tags: Mapping[str, TagConfig] | None = None,
    loc: Loc = ("alarms",),
) -> list[AlarmDefinition]:
    """Expand templates and resolve tag references (``None`` entries, which failed
    validation, are skipped).  ``equipment`` lists the hierarchy's
    ``area/line/cell/equipment`` paths; ``tags`` (path below the site → tag config), when
    given, lets unknown tags, string tags with numeric alarms and deadbands that could
    never clear be named.  Raises :class:`AlarmConfigError` with every issue."""
    all_equipment = sorted(equipment)
    issues: list[tuple[Loc, str]] = []
    out: list[AlarmDefinition] = []
    names: dict[str, int] = {}
    prefix = f"{enterprise}/{site}/"

    for i, config in enumerate(alarms):
        if config is None:
            continue
        here = (*loc, i)
        if config.equipment is not None:
            matched = [e for e in all_equipment if any(_matches(p, e) for p in config.equipment)]
            if not matched:
                issues.append(((*here, "equipment"), "the template matches no equipment"))
                continue
            contexts: list[str | None] = list(matched)
        else:
            contexts = [None]
        for context in contexts:
            found = _instance(config, i, context, prefix, tags, here)
            if isinstance(found, list):
                issues += found
                continue
            if found.name in names:
                issues.append(
                    (
                        (*here, "name"),
                        f"duplicate alarm name {found.name!r} (also entry {names[found.name]})",
                    )
                )
                continue
            names[found.name] = i
            out.append(found)
    if issues:
        raise AlarmConfigError(issues)
    return out


def _instance(
    config: AlarmConfig,
    index: int,
    context: str | None,
    prefix: str,
    tags: Mapping[str, TagConfig] | None,
    here: Loc,
) -> AlarmDefinition | list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    where = f" (equipment {context})" if context else ""
    base = context
    if base is None and config.tag is not None and config.tag.count("/") >= TAG_PATH_DEPTH - 1:
        base = _site_path(config.tag, prefix).rsplit("/", 1)[0]

    def resolve(path: str, field: str) -> str:
        parts = path.split("/")
        if len(parts) == 1:
            if base is None:
                issues.append(
                    (
                        (*here, field),
                        f"{path!r} is relative to an equipment, but the alarm has "
                        "none: give area/line/cell/equipment/tag or make it a template",
                    )
                )
                return path
            full = f"{base}/{path}"
        elif len(parts) == TAG_PATH_DEPTH + 2 and not path.startswith(prefix):
            issues.append(((*here, field), f"{path!r} is not a tag of {prefix.rstrip('/')}"))
            return path
        else:
            full = _site_path(path, prefix)
        if tags is not None and full not in tags:
            issues.append(((*here, field), f"unknown tag {full!r}{where}"))
        return full

    def resolve_expr(source: str | None, field: str) -> Expression | None:
        if source is None:
            return None
        try:
            expr = parse(source)
        except ExpressionError as exc:  # validated already; kept for direct callers
            issues.append(((*here, field), str(exc)))
            return None

        def one(ref: Ref) -> str:
            if ref.path.count("/") not in (0, TAG_PATH_DEPTH - 1, TAG_PATH_DEPTH + 1):
                issues.append(
                    ((*here, field), f"{ref.path!r} (column {ref.column}) is not a tag path")
                )
                return ref.path
            return resolve(ref.path, field)

        return expr.resolve(one)

    tag = None if config.tag is None else resolve(config.tag, "tag")
    setpoint = None if config.setpoint is None else resolve(config.setpoint, "setpoint")
    expression = resolve_expr(config.expression, "expression")
    suppress = resolve_expr(config.suppress_when, "suppress_when")
    if tags is not None and tag is not None and tag in tags:
        issues += _type_issues(config, tags[tag], here, where)
    if issues:
        return issues
    name = config.name if context is None else f"{config.name}/{context}"
    return AlarmDefinition(
        name=name,
        config=config,
        index=index,
        tag=tag,
        setpoint=setpoint,
        expression=expression,
        suppress_when=suppress,
        equipment=base,
        template=config.name if context is not None else None,
    )


def _site_path(path: str, prefix: str) -> str:
    return path[len(prefix) :] if path.startswith(prefix) else path


def _type_issues(
    config: AlarmConfig, tag: TagConfig, here: Loc, where: str
) -> list[tuple[Loc, str]]:
    kind = config.type
    data_type = tag.value_type
    if data_type is DataType.STRING and kind is not AlarmType.STALE:
        return [((*here, "type"), f"{tag.path} is a string tag{where}: only a stale alarm applies")]
    if data_type is DataType.BOOL and kind in NUMERIC_TYPES:
        return [((*here, "type"), f"{tag.path} is a bool tag{where}: use type discrete")]
    if tag.range is not None and config.limit is not None and config.deadband:
        low, high = tag.range
        if kind in HIGH_TYPES and config.limit - config.deadband < low:
            return [
                (
                    (*here, "deadband"),
                    f"deadband {config.deadband:g} puts the clear "
                    f"threshold below the range of {tag.path} ({low:g}): it could never clear",
                )
            ]
        if kind in LOW_TYPES and config.limit + config.deadband > high:
            return [
                (
                    (*here, "deadband"),
                    f"deadband {config.deadband:g} puts the clear "
                    f"threshold above the range of {tag.path} ({high:g}): it could never clear",
                )
            ]
    return []


def _only_for(
    kind: AlarmType | None, owner: AlarmType, value: object, needs: str, field: str
) -> None:
    """A field that alarms of type ``owner`` need and every other type refuses."""
    if kind is owner and value is None:
        article = "an" if str(owner)[0] in "aeiou" else "a"
        raise ValueError(f"{article} {owner} alarm needs {needs}")
    if kind not in (None, owner) and value is not None:
        raise ValueError(f"a {kind} alarm takes no {field}")
