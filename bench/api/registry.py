"""Plugin specs and the registry that finds them by kind and name."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError

KINDS = ("dataset", "encoder", "fusion", "objective", "task")


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

    def describe_options(self) -> list[dict[str, Any]]:
        """Every option: name, type, default, allowed values, description (bench/api/plugin_options.py)."""
        from bench.api.plugin_options import describe_options

        return describe_options(self.options)

    def build(self, raw: dict | None, ctx: Any, *, file: str | None = None, field: str = "options") -> Any:
        """Validate raw options (errors name ``field``) and call the factory with them."""
        return self.factory(self.parse_options(raw, file=file, field=field), ctx)

    def parse_options(self, raw: dict | None, *, file: str | None = None, field: str = "options") -> BaseModel:
        """Validate raw options against the plugin's model, naming the field on error."""
        try:
            return self.options.model_validate(raw or {})
        except ValidationError as exc:
            from bench.config.validation import describe_validation_error

            raise BenchError(
                f"bad options for {self.kind} '{self.name}': {describe_validation_error(exc, self.options)}",
                file=file, field=field,
                fix=f"allowed options: {', '.join(self.options.model_fields) or '(none)'}",
            ) from None


@dataclass
class Registry:
    """All plugins discovered, by kind then name, plus what failed to load.

    ``load_errors``: "distribution:entry point" -> the import (or hook) error text.
    ``left_out``: outside distributions not loaded because MIC_BENCH_PLUGINS does not list them.
    """

    plugins: dict[str, dict[str, PluginSpec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    distributions: dict[str, str] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)

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
            f"unknown {kind} plugin '{name}'{self._not_loaded()}",
            file=file, field=field,
            fix=f"{hint}known {kind}s: {', '.join(known) or '(none)'}; `bench plugins` lists them all"
                + ("; if it comes from a distribution left out, add that distribution to MIC_BENCH_PLUGINS"
                   if self.left_out else "")
                + ("; if it comes from a distribution that failed to import, fix that import error"
                   if self.load_errors else ""),
        )

    def find(self, name: str) -> list[PluginSpec]:
        """Every plugin called ``name``, of any kind (for `bench plugins NAME`)."""
        found = [spec for spec in self.all() if spec.name == name]
        if found:
            return found
        known = sorted({spec.name for spec in self.all()})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        raise BenchError(f"no plugin is named '{name}'{self._not_loaded()}", field="NAME",
                         fix=(f"did you mean {', '.join(repr(c) for c in close)}? " if close else "")
                         + "`bench plugins` lists every plugin")

    def _not_loaded(self) -> str:
        """Why plugins may be missing: distributions filtered out or failing to import."""
        reasons = [f"distribution {dist} is left out by MIC_BENCH_PLUGINS" for dist in self.left_out]
        reasons += [f"{where} failed to import ({error})" for where, error in self.load_errors.items()]
        return f" (not loaded, so it may come from one of these: {'; '.join(reasons)})" if reasons else ""

    def create(self, kind: str, name: str, options: dict | None, ctx: Any, *, field: str,
               file: str | None = None) -> Any:
        """Find a plugin, validate its options and build it: ``factory(parsed options, ctx)``.

        ``field`` is the plugin's place in the suite (e.g. ``trial.fusion``); errors name
        ``<field>.name`` or ``<field>.options``.
        """
        return self.get(kind, name, file=file, field=f"{field}.name").build(options, ctx, file=file,
                                                                           field=f"{field}.options")

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins.get(kind, {}))

    def all(self) -> list[PluginSpec]:
        return [spec for kind in KINDS for _, spec in sorted(self.plugins[kind].items())]

    def with_distribution(self, spec: PluginSpec, dist: str, version: str) -> PluginSpec:
        return replace(spec, distribution=dist, version=version)
