"""The check of each template file, used or not, before any render: readable text, front
matter (keys, required values, category), Jinja syntax, known variables, `link()` paths and the
templates it extends or includes; and the languages the file names bring."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from jinja2 import TemplateSyntaxError, meta, nodes

from trialpath.messages.template_check.files import (
    CATEGORIES,
    CHANNEL_KEYS,
    CHANNEL_NAMES,
    FRONT_MATTER_KEYS,
    REQUIRED_KEYS,
    TEXT_KEYS,
    File,
    describe_name,
    front_matter_lines,
    known_locale,
)
from trialpath.messages.template_check.jinja import (
    link_paths,
    path_problem,
    syntax_message,
    used_variables,
)
from trialpath.messages.template_check.run import CheckRun
from trialpath.messages.templating import FALLBACK_LOCALE, TemplateProblem, split_front_matter


class FileChecks(CheckRun):
    """Reads each file into `files`, reporting what is wrong with it on its own."""

    def _read(self, name: str, path: Path) -> File:
        file = describe_name(name)
        try:
            file.source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            file.broken = True
            self.add("error", name, None, "the file is not saved as UTF-8 text")
            return file
        file.meta_lines = front_matter_lines(file.source)
        try:
            file.meta, body, skipped = split_front_matter(file.source)
        except TemplateProblem as err:
            file.broken = True
            problem = (
                "it must be `key: value` lines between the two `---` lines"
                if "mapping" in str(err)
                else str(err)
            )
            self.add("error", name, 1, f"the front matter cannot be read: {problem}")
            return file
        except yaml.YAMLError as err:
            file.broken = True
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 2 if mark is not None else 1
            problem = getattr(err, "problem", None) or str(err)
            hint = (
                " (put the value in double quotes when it contains a colon)"
                if "mapping values" in problem
                else ""
            )
            self.add("error", name, line, f"the front matter is not valid: {problem}{hint}")
            return file
        self._check_front_matter(file)
        try:
            ast = self.env.parse("\n" * skipped + body, name, str(path))
        except TemplateSyntaxError as err:
            file.broken = True
            self.add("error", name, err.lineno, syntax_message(err))
            return file
        self._check_ast(file, ast, None)
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                continue
            file.refs.add(ref)
            if not (self.root / ref).is_file():
                file.broken = True
                line = next((n.lineno for n in ast.find_all(nodes.Const) if n.value == ref), None)
                others = [n for n in self._all_names() if n != name]
                close = difflib.get_close_matches(ref, others, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                self.add("error", name, line, f"uses `{ref}`, which does not exist{hint}")
        return file

    def _all_names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*.j2")]

    def _check_front_matter(self, file: File) -> None:
        name, meta_ = file.name, file.meta
        if file.partial:
            return
        lines = file.meta_lines
        for key, value in meta_.items():
            line = lines.get(str(key))
            if key not in FRONT_MATTER_KEYS:
                close = difflib.get_close_matches(str(key), FRONT_MATTER_KEYS, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                allowed = ", ".join(FRONT_MATTER_KEYS)
                self.add(
                    "warning",
                    name,
                    line,
                    f"unknown front matter key `{key}`{hint}; known keys: {allowed}",
                )
                continue
            if file.channel in CHANNEL_KEYS and key not in CHANNEL_KEYS[file.channel]:
                self.add(
                    "warning",
                    name,
                    line,
                    f"`{key}` has no effect in {CHANNEL_NAMES[file.channel]} messages",
                )
            if value is None and key in TEXT_KEYS:
                continue  # reported as missing below, or harmless
            if key in TEXT_KEYS and not isinstance(value, str):
                self.add(
                    "warning",
                    name,
                    line,
                    f"`{key}` is read as {value!r}, not as text: put the value in double quotes",
                )
            if isinstance(value, str) and "{" in value:
                try:
                    ast = self.text_env.parse(value)
                except TemplateSyntaxError as err:
                    file.broken = True
                    self.add("error", name, line, syntax_message(err))
                    continue
                self._check_ast(file, ast, line)
        if file.primary and file.channel:
            for key in REQUIRED_KEYS.get(file.channel, ()):
                if not meta_.get(key):
                    self.add(
                        "error",
                        name,
                        lines.get(key),
                        f"no `{key}:` in the front matter: every "
                        f"{CHANNEL_NAMES[file.channel]} message needs one",
                    )
        cta_path = meta_.get("cta_path")
        if isinstance(cta_path, str) and "{" not in cta_path:  # else checked once rendered
            problem = path_problem(cta_path)
            if problem:
                self.add("error", name, lines.get("cta_path"), problem)
        self._check_in_app_first(file)
        self._check_category(file)

    def _check_in_app_first(self, file: File) -> None:
        """A card that goes before its email (`unless_read_hours`) is what the user acts on: it
        should have its button, as the email has its link."""
        if not (file.primary and file.channel == "in_app" and file.message):
            return
        if file.meta.get("cta_label"):
            return
        try:
            spec = self.defn.message(file.message)
        except KeyError:
            return
        if spec.unless_read_hours is not None:
            self.add(
                "warning",
                file.name,
                None,
                f"`{file.message}` goes in-app first (unless_read_hours), and this card has no "
                "`cta_label:`: the user gets no button to act on it",
            )

    def _check_category(self, file: File) -> None:
        category = file.meta.get("category")
        line = file.meta_lines.get("category")
        if category is None:
            if file.primary and file.channel in ("in_app", "sms"):
                self.add("warning", file.name, line, "no `category:` in the front matter")
            return
        if category not in CATEGORIES:
            self.add(
                "error",
                file.name,
                line,
                f"`category: {category}` is not a category: use marketing or transactional",
            )
            return
        if not file.message or not file.primary:
            return
        try:
            spec = self.defn.message(file.message)
        except KeyError:
            return
        if category != spec.category:
            self.add(
                "error",
                file.name,
                line,
                f"`category: {category}` disagrees with the journey, which sends "
                f"`{file.message}` as {spec.category} (write `category: {spec.category}`)",
            )

    def _check_ast(self, file: File, ast: nodes.Template, line: int | None) -> None:
        """Variables and app paths; `line` is the front matter line of a front matter value."""
        for path, at in used_variables(ast):
            if self.variables.unknown(path):
                self.add("error", file.name, line or at, self.variables.message(path))
        for path, at in link_paths(ast):
            problem = path_problem(path)
            if problem:
                self.add("error", file.name, line or at, problem)

    def _locales(self) -> list[str]:
        found: dict[str, None] = {FALLBACK_LOCALE: None}
        for file in self.files.values():
            if file.locale is None or file.partial or file.locale in found:
                continue
            if known_locale(file.locale):
                found[file.locale] = None
        return list(found)
