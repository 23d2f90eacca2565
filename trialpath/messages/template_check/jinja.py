"""Jinja's view of a template in plain words: syntax errors with a hint, the template line of
a render error, the variables a template reads (with "did you mean") and its `link()` paths."""

from __future__ import annotations

import difflib
import os
import re
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from trialpath.messages.template_check.files import FRONT_MATTER_KEYS

_DICT_METHODS = frozenset({"get", "items", "keys", "values"})


def syntax_message(err: TemplateSyntaxError) -> str:
    text = err.message or str(err)
    hint = ""
    if "end of print statement" in text or "unexpected '}'" in text:
        hint = " (check that every `{{` is closed by `}}`)"
    elif "unknown tag" in text or "unexpected end of template" in text:
        hint = (
            " (check the spelling of each `{% ... %}` tag, and that every `{% if %}`,"
            " `{% for %}` and `{% block %}` has its `{% end... %}`)"
        )
    elif "end of statement block" in text:
        hint = " (check that every `{%` is closed by `%}`)"
    return f"Jinja cannot read this line: {text}{hint}"


def template_frame(err: BaseException, root: Path) -> tuple[str, int] | None:
    """The innermost template frame of an error: Jinja rewrites tracebacks so the template's
    own frame names its file and line."""
    prefix = str(root.resolve()) + os.sep
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.startswith(prefix) and frame.lineno:
            name = Path(frame.filename).resolve().relative_to(root.resolve()).as_posix()
            return name, frame.lineno
    return None


UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
UNDEFINED_ATTR = re.compile(r"has no (?:attribute|element) '?([^']+)'?$")


def path_on_line(text: str, name: str, attribute: bool) -> str:
    """The dotted variable (`user.frist_name`) a failing line uses, from the name Jinja gives."""
    if attribute:
        pattern = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\." + re.escape(name) + r"\b"
    else:
        pattern = r"(?<![\w.])" + re.escape(name) + r"(?:\.[A-Za-z_]\w*)?\b"
    found = re.search(pattern, text)
    return found.group(0) if found else name


class Variables:
    """The documented template variables, for "did you mean" suggestions."""

    def __init__(self, context: Mapping[str, Any], env: SandboxedEnvironment) -> None:
        self.groups: dict[str, frozenset[str]] = {
            key: frozenset(value) for key, value in context.items() if isinstance(value, dict)
        }
        self.top = frozenset(context) | frozenset(FRONT_MATTER_KEYS)
        self.allowed_top = self.top | frozenset(env.globals)
        self.documented = sorted(
            [k for k in self.top if k not in self.groups]
            + [f"{group}.{key}" for group, keys in self.groups.items() for key in keys]
        )

    def unknown(self, path: str) -> bool:
        top, _, rest = path.partition(".")
        if top not in self.allowed_top:
            return True
        attribute = rest.split(".")[0]
        return bool(
            attribute
            and top in self.groups
            and attribute not in self.groups[top]
            and attribute not in _DICT_METHODS
        )

    def message(self, path: str) -> str:
        if path in self.documented:
            if path.startswith("alert."):
                return f"`{path}` is only filled in support alerts, not in this message"
            return f"`{path}` is empty in this message"
        text = f"the variable `{path}` does not exist"
        close = difflib.get_close_matches(path, self.documented, n=1, cutoff=0.6)
        top = path.partition(".")[0]
        if close:
            text += f" (did you mean `{close[0]}`?)"
        elif top in self.groups:
            text += f" (`{top}` has: {', '.join(sorted(self.groups[top]))})"
        return text


def used_variables(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """(dotted variable, line) for each context variable a template reads; names the template
    sets itself (`{% set %}`, `{% for %}`, macro arguments) are left out."""
    undeclared = meta.find_undeclared_variables(ast)
    seen: set[int] = set()
    lookups: list[tuple[nodes.Expr, str | None, int]] = [
        (n.node, n.attr, n.lineno) for n in ast.find_all(nodes.Getattr)
    ]
    lookups += [
        (n.node, n.arg.value if isinstance(n.arg, nodes.Const) else None, n.lineno)
        for n in ast.find_all(nodes.Getitem)
    ]
    for target, attribute, line in sorted(lookups, key=lambda item: item[2]):
        if not isinstance(target, nodes.Name) or target.name not in undeclared:
            continue
        seen.add(id(target))
        if isinstance(attribute, str):
            yield f"{target.name}.{attribute}", line
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared and id(name) not in seen:
            yield name.name, name.lineno


def link_paths(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """(path, line) for each `link('...')` call with a literal path."""
    for call in ast.find_all(nodes.Call):
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name == "link"
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and isinstance(call.args[0].value, str)
        ):
            yield call.args[0].value, call.lineno


def path_problem(path: str) -> str | None:
    if path.startswith(("/", "https://", "http://")):
        return None
    return f"the app path `{path}` must start with `/` (write `/{path.lstrip('./')}`)"
