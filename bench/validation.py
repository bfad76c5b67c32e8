"""Turn pydantic validation errors into one readable line per problem."""
from __future__ import annotations

from pydantic import BaseModel, ValidationError


def field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The fields allowed where an unknown key was found (walks nested models by name)."""
    current = model
    for part in loc[:-1]:
        if current is None or isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        current = _first_model(ann)
    return sorted(current.model_fields) if current is not None else []


def _first_model(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = field_path(((prefix,) if prefix else ()) + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            msg = "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)
