"""Plugin specs and the registry that finds them by kind and name."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError

KINDS = ("dataset", "encoder", "fusion", "objective")


class NoOptions(BaseModel):
    """Options model for plugins that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginSpec:
    """What a plugin offers: a name, a one-line description, typed options and a factory.

    ``factory(options, ctx)`` receives the validated options model and a BuildContext.
    """

    kind: str
    name: str
    description: str
    factory: Callable[..., Any]
    options: type[BaseModel] = NoOptions
    distribution: str = "?"
    version: str = "?"

    def parse_options(self, raw: dict | None, *, file: str | None = None, field: str = "options") -> BaseModel:
        """Validate raw options against the plugin's model, naming the field on error."""
        try:
            return self.options.model_validate(raw or {})
        except ValidationError as exc:
            from bench.validation import describe_validation_error

            raise BenchError(
                f"bad options for {self.kind} '{self.name}': {describe_validation_error(exc, self.options)}",
                file=file, field=field,
                fix=f"allowed options: {', '.join(self.options.model_fields) or '(none)'}",
            ) from None


@dataclass
class Registry:
    """All plugins discovered, by kind then name, plus what failed to load."""

    plugins: dict[str, dict[str, PluginSpec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    distributions: dict[str, str] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    def add(self, spec: PluginSpec) -> None:
        if spec.kind not in KINDS:
            raise BenchError(
                f"plugin '{spec.name}' from {spec.distribution} has unknown kind '{spec.kind}'",
                fix=f"use one of: {', '.join(KINDS)}",
            )
        known = self.plugins[spec.kind].get(spec.name)
        if known is not None:
            raise BenchError(
                f"two {spec.kind} plugins are named '{spec.name}': one from distribution "
                f"'{known.distribution}', one from '{spec.distribution}'",
                fix="uninstall one of the two distributions, or restrict outside plugins with "
                    "MIC_BENCH_PLUGINS=<comma-separated distribution names>",
            )
        self.plugins[spec.kind][spec.name] = spec

    def get(self, kind: str, name: str, *, file: str | None = None, field: str | None = None) -> PluginSpec:
        found = self.plugins.get(kind, {}).get(name)
        if found is not None:
            return found
        known = sorted(self.plugins.get(kind, {}))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise BenchError(
            f"unknown {kind} plugin '{name}'",
            file=file, field=field,
            fix=f"{hint}known {kind}s: {', '.join(known) or '(none)'}; `bench plugins` lists them all",
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins.get(kind, {}))

    def all(self) -> list[PluginSpec]:
        return [spec for kind in KINDS for _, spec in sorted(self.plugins[kind].items())]

    def with_distribution(self, spec: PluginSpec, dist: str, version: str) -> PluginSpec:
        return replace(spec, distribution=dist, version=version)
