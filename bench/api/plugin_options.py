"""A plugin's options as a user reads them: name, type, default, allowed values, description.

Read from the plugin's pydantic options model, so `bench plugins NAME` can never drift from
what suite validation accepts.
"""
from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
           ("max_length", "max length"), ("multiple_of", "multiple of"))


def describe_options(model: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """One entry per option (nested option models open into dotted names such as ``columns.title``)."""
    out = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        entry = {
            "name": prefix + name,
            "type": type_name(annotation),
            "required": info.is_required(),
            "default": None if info.is_required() else _default(info),
            "choices": choices(annotation),
            "bounds": bounds(info.metadata),
            "description": info.description or "",
        }
        out.append(entry)
        nested = _option_model(annotation)
        entry["nested"] = nested is not None
        if nested is not None:
            out.extend(describe_options(nested, prefix=f"{prefix}{name}."))
    return out


def _default(info) -> Any:
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is PydanticUndefined:
        return None
    return to_jsonable_python(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)


def _members(annotation: Any) -> tuple[Any, tuple]:
    origin = typing.get_origin(annotation)
    return origin, typing.get_args(annotation)


def _option_model(annotation: Any) -> type[BaseModel] | None:
    """The options model a field holds directly or as `Model | None`."""
    origin, args = _members(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def type_name(annotation: Any) -> str:
    """`int`, `float | None`, `list[str]`, `str` for a Literal of strings ..."""
    origin, args = _members(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        kinds = []
        for value in args:
            name = "null" if value is None else type(value).__name__
            if name not in kinds:
                kinds.append(name)
        return " | ".join(kinds)
    if origin in (typing.Union, types.UnionType):
        parts = []
        for arg in args:
            for part in type_name(arg).split(" | "):
                if part not in parts:
                    parts.append(part)
        return " | ".join(parts)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else getattr(origin, "__name__", str(origin))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "str"
    return getattr(annotation, "__name__", str(annotation))


def choices(annotation: Any) -> list | None:
    """The allowed values of a Literal or Enum (also inside `X | None`), else None."""
    origin, args = _members(annotation)
    if origin is typing.Annotated:
        return choices(args[0])
    if origin is typing.Literal:
        return list(args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [m.value for m in annotation]
    if origin in (typing.Union, types.UnionType):
        found = [choices(a) for a in args]
        if any(f is not None for f in found):
            values: list = []
            for arg, f in zip(args, found):
                values.extend(f if f is not None else ([None] if arg is type(None) else []))
            return values
    return None


def bounds(metadata: list) -> dict[str, Any]:
    """ge/gt/le/lt/min_length/max_length/multiple_of constraints of a field."""
    out = {}
    for item in metadata:
        if isinstance(item, annotated_types.Interval):
            out.update({k: v for k, v in vars(item).items() if v is not None})
            continue
        for key, _ in _BOUNDS:
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def allowed_text(entry: dict[str, Any]) -> str:
    """`one of: a, b`, `>= 0, < 1`, or empty."""
    parts = []
    if entry["choices"] is not None:
        parts.append("one of: " + ", ".join("null" if c is None else str(c) for c in entry["choices"]))
    symbols = dict(_BOUNDS)
    parts.extend(f"{symbols[k]} {v}" for k, v in entry["bounds"].items() if k in symbols)
    return ", ".join(parts)


def default_text(entry: dict[str, Any]) -> str:
    if entry["required"]:
        return "(required)"
    if entry.get("nested"):
        return "(see below)"
    value = entry["default"]
    if isinstance(value, str) and value and value == value.strip():
        return value
    return json.dumps(value)


def options_table(entries: list[dict[str, Any]]) -> str:
    """The options as a plain text table (or a line saying there are none)."""
    if not entries:
        return "  (no options)"
    from tabulate import tabulate

    rows = [[e["name"], e["type"], default_text(e), allowed_text(e), e["description"]] for e in entries]
    return tabulate(rows, headers=["option", "type", "default", "allowed", "description"], maxcolwidths=[None, 24, 24, 30, 60])


def with_option_defaults(config: dict[str, Any], registry) -> dict[str, Any]:
    """A validated trial config with every plugin's options as the plugin will see them (defaults
    filled in), for `bench validate --show-config`. The trial key is still the config as written."""
    from bench.config.schema import TrialConfig
    from bench.config.suite import plugin_refs
    trial = TrialConfig.model_validate(config)
    for kind, _, ref in plugin_refs(trial):
        ref.options = registry.get(kind, ref.name).parse_options(ref.options).model_dump(mode="json")
    return trial.model_dump(mode="json")
