"""What a script prints for --help (its docstring and its own flags, not absl's logging flags)
and for --config_help (every config field, its value and the reason its config file gives).

Nothing here imports JAX: help has to come back at once."""
from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
from pathlib import Path

WIDTH = 100
_REQUIRED = "must have a value other than None"  # absl marks a required flag only by this validator


def script_help(doc: str | None, script_flags) -> str:
    """The script's docstring, then each of `script_flags` (absl Flag objects, in the order the
    script defines them) with its help and default."""
    lines = [inspect.cleandoc(doc or "").rstrip(), "", "flags:"]
    for flag in script_flags:
        default = _default_text(flag)
        required = any(_REQUIRED in (getattr(v, "message", "") or "") for v in flag.validators)
        lines.append(f"  {_synopsis(flag)}" + (" (required)" if required else
                                              f" (default: {default})" if default is not None else ""))
        # absl adds the choices of an enum and a note on repeating to the help; the synopsis
        # already says both.
        help_text = re.sub(r";\s*repeat this option to specify a list of values$", "", flag.help or "")
        if getattr(flag.parser, "enum_values", None):
            help_text = help_text.removeprefix(f"<{'|'.join(flag.parser.enum_values)}>: ")
        lines += textwrap.wrap(help_text, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


def _synopsis(flag) -> str:
    if flag.boolean:
        return f"--[no]{flag.name}"
    enum_values = getattr(flag.parser, "enum_values", None)
    if enum_values:
        return f"--{flag.name}={'|'.join(enum_values)}"
    kind = flag.flag_type()
    if kind.startswith("multi"):
        return f"--{flag.name}=VALUE (repeatable)"
    if kind.startswith("comma separated list"):
        return f"--{flag.name}=A,B,…"
    return f"--{flag.name}=" + {"int": "INT", "float": "FLOAT", "config object": "FILE"}.get(kind, "VALUE")


def _default_text(flag) -> str | None:
    """None where there is nothing worth printing (no default, an empty list)."""
    default = flag.default
    if default is None or default == []:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, list):
        return ",".join(map(str, default))
    if not isinstance(default, (str, int, float)):  # --config's default is the loaded config
        return flag.default_as_str.strip("'\"")
    return str(default) if default != "" else "''"


def config_help(config, path) -> str:
    """Every leaf field of `config` (loaded from the config file at `path`, overrides applied) as
    `dotted.name = value  # reason`, the reason being the trailing comment of the field's last
    assignment along the file's chain of base configs."""
    comments, order = field_comments(path)
    values = dict(_leaves(config))
    names = [n for n in order if n in values] + sorted(set(values) - set(order))
    assignments = [f"{name} = {values[name]!r}" for name in names]
    column = min(max(map(len, assignments), default=0), WIDTH // 2) + 2
    lines = [f"Config fields of {path} (change any with --config.FIELD=VALUE):"]
    for name, assignment in zip(names, assignments):
        comment = comments.get(name)
        lines.append(f"  {assignment.ljust(column)}# {comment}" if comment else f"  {assignment}")
    return "\n".join(lines) + "\n"


def _leaves(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def field_comments(path, _seen=()) -> tuple[dict[str, str], list[str]]:
    """({dotted field: its trailing comment}, fields in the order first assigned) for the config
    file at `path`, base configs first: a file's own comment replaces its base's, and an
    assignment without one keeps the base's.

    A base is a sibling file the config imports (`from configs import default`); a field is an
    assignment in get_config() to an attribute chain rooted at the config it returns, directly
    or through an alias such as `config.data = data = ConfigDict()`."""
    path = Path(path).resolve()
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    comments, order = {}, []
    for base in _base_files(tree, path.parent):
        if base not in _seen:
            base_comments, base_order = field_comments(base, (*_seen, path))
            comments.update(base_comments)
            order += [n for n in base_order if n not in order]
    trailing = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef)
                     and node.name == "get_config"), None)
    if function is None:
        return comments, order
    returned = [node.value.id for node in ast.walk(function)
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Name)]
    aliases = dict.fromkeys(returned, "")
    assignments = sorted((node for node in ast.walk(function) if isinstance(node, ast.Assign)),
                         key=lambda node: (node.lineno, node.col_offset))  # aliases come first
    for node in assignments:
        fields = [f for f in (_dotted(t, aliases) for t in node.targets) if f]
        for target in node.targets:
            if isinstance(target, ast.Name) and fields:
                aliases[target.id] = fields[0]
        comment = trailing.get(node.end_lineno) or trailing.get(node.lineno)
        for field in fields:
            if field not in order:
                order.append(field)
            if comment:
                comments[field] = comment
    return comments, order


def _dotted(node, aliases: dict) -> str | None:
    """`config.data.seq_len` → "data.seq_len" (with `config` the root), or None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value, aliases)
        if parent is not None:
            return f"{parent}.{node.attr}" if parent else node.attr
    return None


def _base_files(tree, folder: Path) -> list[Path]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module.split(".")[-1]] if "." in node.module else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name.split(".")[-1] for a in node.names]
    return [folder / f"{name}.py" for name in names if (folder / f"{name}.py").is_file()]
