"""Reading suite YAML safely: size and alias-expansion bounds, clear syntax errors, includes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.config.matrix import deep_merge
from bench.errors import BenchError
from bench.data.file_reads import NotRegularFile, not_regular_reason, open_regular, read_at_most

def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise BenchError("suite file not found", file=path, fix="check the path; suites live in suites/")
    if path.is_dir():
        raise BenchError("this is a folder, not a suite file", file=path, fix="pass a .yaml file, e.g. suites/smoke.yaml")
    try:
        with open_regular(path) as handle:
            raw = read_at_most(handle, MAX_SUITE_BYTES)
    except NotRegularFile as exc:
        raise BenchError(f"the suite file {exc}", file=path,
                         fix="pass a .yaml file (FIFOs, devices and sockets are not read)") from None
    except OSError as exc:
        raise BenchError(f"cannot read the suite file: {exc.strerror or exc}", file=path,
                         fix="check the file's permissions") from None
    if raw is None:
        raise BenchError(f"suite file is {path.stat().st_size} bytes (at most {MAX_SUITE_BYTES})", file=path,
                         fix="a suite is a short YAML file; split it with include:")
    try:
        data = load_yaml_bounded(raw.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise BenchError("suite file is not UTF-8 text", file=path, fix="save the file as UTF-8") from None
    except RecursionError:
        raise BenchError("the YAML is nested too deeply", file=path, fix="a suite needs a few levels of nesting") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = str(getattr(exc, "problem", exc))
        fix = "indent with spaces: YAML does not allow tabs" if "'\\t'" in problem else \
            "fix the YAML syntax (indentation, colons, quotes)"
        raise BenchError(f"not valid YAML: {problem}", file=path, field=where, fix=fix) from None
    if not isinstance(data, dict):
        raise BenchError("a suite must be a YAML mapping with at least name, trial", file=path,
                         fix="start from suites/smoke.yaml")
    return data


MAX_SUITE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # a suite's expanded size; alias bombs (billion laughs) blow far past it


def load_yaml_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load, but anchors/aliases may not expand past MAX_YAML_NODES nodes or refer to themselves.

    safe_load shares an aliased node instead of copying it, so a billion-laughs file loads in
    microseconds and explodes later (hashing, deep copies, validation). The composed node graph
    is measured first, as the tree it stands for. Parsed by libyaml where PyYAML has it (the same
    safe constructor, a few times quicker); a file it rejects is parsed again by PyYAML's own
    parser, whose error messages (and marks) are the ones reported.
    """
    if FAST_LOADER is not None:
        try:
            return _load_bounded(text, path, FAST_LOADER)
        except yaml.YAMLError:
            pass
    return _load_bounded(text, path, yaml.SafeLoader)


FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _load_bounded(text: str, path: Path, loader_class: type) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, path, {}, set())
            return loader.construct_document(node)
        return None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, path: Path, sizes: dict[int, int], open_nodes: set[int]) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise BenchError("an alias refers to the node that contains it (a recursive structure)", file=path,
                         field=f"line {node.start_mark.line + 1}", fix="remove the self-referring alias")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        _refuse_duplicate_keys(node, path)
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(c, path, sizes, open_nodes) for c in children)
    open_nodes.discard(key)
    if size > MAX_YAML_NODES:
        raise BenchError(f"anchors and aliases expand to more than {MAX_YAML_NODES} values", file=path,
                         field=f"line {node.start_mark.line + 1}",
                         fix="a suite needs far fewer; remove the nested aliases (this looks like an alias bomb)")
    sizes[key] = size
    return size


def _refuse_duplicate_keys(node: yaml.MappingNode, path: Path) -> None:
    """YAML forbids a key twice in one mapping; PyYAML keeps the last silently (a second `matrix:`
    would drop the first's axes). A merge key (`<<: *base`) is not a key of the mapping itself."""
    first: dict[tuple, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = (key_node.tag, key_node.value)
        if key in first:
            line, again = first[key].start_mark.line + 1, key_node.start_mark.line + 1
            raise BenchError(f"the key '{key_node.value}' appears twice in one mapping (lines {line} and {again}); "
                             "YAML allows a key once, and the second would silently replace the first",
                             file=path, field=f"line {again}",
                             fix=f"keep one '{key_node.value}:' (merge the two into it)")
        first[key] = key_node


MAX_INCLUDE_DEPTH = 16
MAX_INCLUDED_FILES = 100  # files read for one suite, counting a file each time it is included
MAX_INCLUDED_BYTES = 4 * MAX_SUITE_BYTES


class _IncludeBudget:
    """What one suite's includes may read in all: a few files including each other ten times over
    would otherwise read (and deep-merge) exponentially many files, cycles or not."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def spend(self, path: Path, including: Path) -> None:
        self.files += 1
        self.bytes += path.stat().st_size
        if self.files > MAX_INCLUDED_FILES or self.bytes > MAX_INCLUDED_BYTES:
            raise BenchError(f"the includes read more than {MAX_INCLUDED_FILES} files or {MAX_INCLUDED_BYTES} bytes "
                             f"in all (at {path})", file=including, field="include",
                             fix="include each shared file once; a file included several times over is read "
                                 "each time")


def read_with_includes(path: Path, seen: tuple = (), budget: _IncludeBudget | None = None) -> dict:
    budget = budget or _IncludeBudget()
    if len(seen) > MAX_INCLUDE_DEPTH:
        raise BenchError(f"includes nest more than {MAX_INCLUDE_DEPTH} files deep", file=path, field="include",
                         fix="flatten the chain of includes")
    data = read_yaml(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        if not isinstance(inc, str):
            raise BenchError(f"include entry {inc!r} is not a file path", file=path, field="include",
                             fix="write include: base.yaml or include: [base.yaml, data.yaml]")
        inc_path = (path.parent / inc).resolve()
        if not inc_path.exists():
            raise BenchError(f"included file not found: {inc_path}", file=path, field="include",
                             fix="check the include path; it is relative to the including file's folder")
        reason = not_regular_reason(inc_path)
        if reason:
            raise BenchError(f"the included file {inc_path} {reason}", file=path, field="include",
                             fix="include a .yaml file (FIFOs, devices and sockets are not read)")
        if inc_path in seen or inc_path == path.resolve():
            raise BenchError(f"include cycle through {inc}", file=path, field="include", fix="remove the cycle")
        budget.spend(inc_path, path)
        merged = deep_merge(merged, read_with_includes(inc_path, seen + (path.resolve(),), budget))
    return deep_merge(merged, data)


