"""Prompt templates users edit: Jinja2 files rendered in a sandbox with StrictUndefined.

Every template is checked when loaded: a syntax error or a variable the template may not use fails at once
with the file name, rather than on the thousandth API call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from ..extras.errors import BladeInputError
from ..runs.atomic_io import read_text_file
from ..extras.paths import templates_dir as bundled_templates_dir
from .data import QAItem

ALLOWED_VARIABLES = {
    "knowledge_generation.j2": {"question", "options", "answer", "passages"},
    "answer.j2": {"question", "options", "knowledge", "passages"},
    "small_model_query.j2": {"question", "options", "passages"},
    "system.j2": set(),
    "chat_system.j2": {"knowledge", "passages"},
}
REQUIRED = ("knowledge_generation.j2", "answer.j2", "small_model_query.j2")


def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True,
                                lstrip_blocks=True, autoescape=False)


def _load(env: SandboxedEnvironment, path: Path):
    source = read_text_file(path)  # UTF-8 (BOM dropped) or GB18030; else one line naming the byte offset
    try:
        parsed = env.parse(source, name=path.name, filename=str(path))
    except TemplateSyntaxError as err:
        raise BladeInputError(path, f"template syntax error: {err.message}", line=err.lineno) from None
    unknown = meta.find_undeclared_variables(parsed) - ALLOWED_VARIABLES[path.name]
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_VARIABLES[path.name])) or "none"
        raise BladeInputError(path, f"unknown template variable(s) {', '.join(sorted(unknown))} "
                                    f"(allowed: {allowed})")
    return env.from_string(source), path, meta.find_undeclared_variables(parsed)


@dataclass
class PromptSet:
    """The three prompts of BLADE (plus an optional system message for LLM calls)."""

    directory: Path
    _templates: dict
    _variables: dict = field(default_factory=dict)  # {file name: the variables its source uses}

    def _render(self, name: str, **variables) -> str:
        template, path = self._templates[name]
        try:
            return template.render(**variables).strip()
        except (UndefinedError, SecurityError) as err:
            raise BladeInputError(path, f"template error: {err.message}") from None
        except TemplateError as err:  # e.g. a filter applied to the wrong type
            raise BladeInputError(path, f"template error: {err}") from None

    @property
    def template_names(self) -> tuple[str, ...]:
        """File names of the loaded templates, sorted."""
        return tuple(sorted(self._templates))

    def uses_variable(self, name: str, variable: str) -> bool:
        """Whether the loaded template `name` uses `variable` (e.g. an edited answer.j2 without `passages`)."""
        return variable in self._variables.get(name, set())

    def template_sources(self, names: tuple[str, ...] | None = None) -> dict[str, str]:
        """{file name: source text} of the loaded templates (all, or those in `names` that exist), for job
        fingerprints: an edited template must not resume a job made with the old one. Undecodable bytes
        are kept as backslash escapes, so two different files never give the same text."""
        return {name: path.read_bytes().decode("utf-8", errors="backslashreplace")
                for name, (_, path) in sorted(self._templates.items()) if names is None or name in names}

    def _messages(self, user: str) -> list[dict]:
        messages = []
        if "system.j2" in self._templates:
            system = self._render("system.j2")
            if system:
                messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return messages

    def knowledge_generation(self, item: QAItem, passages: list[str] | tuple[str, ...] = ()) -> list[dict]:
        """Chat messages asking the LLM for question-oriented knowledge, given the gold answer and (grounded
        KIT, `knowledge --corpus`) the corpus passages retrieved for it."""
        return self._messages(self._render("knowledge_generation.j2", question=item.question, options=item.options,
                                           answer=item.answer_display, passages=list(passages)))

    def answer(self, item: QAItem, knowledge: str, passages: list[str] | tuple[str, ...] = ()) -> list[dict]:
        """Chat messages asking the LLM to answer, with `knowledge` ("" for the LLM-only baseline) and (the
        passages+knowledge mode, retrieval/combine.py) the corpus `passages` in a block of their own."""
        return self._messages(self._render("answer.j2", question=item.question, options=item.options,
                                           knowledge=knowledge or "", passages=list(passages)))

    def chat_system(self, knowledge: str, passages: list[str] | tuple[str, ...] = ()) -> str | None:
        """The system message carrying knowledge (and, `serve --corpus`, the retrieved `passages`) into free chat
        (`blade-bpo serve`); None without the file."""
        if "chat_system.j2" not in self._templates:
            return None
        return self._render("chat_system.j2", knowledge=knowledge, passages=list(passages))

    def small_model_query(self, item: QAItem, passages: list[str] | tuple[str, ...] = ()) -> str:
        """The user turn the small LM receives (its KIT instruction and its BPO/inference input); with
        `passages` (knowledge-from-passages, retrieval/combine.py) the corpus passages retrieved for it."""
        return self._render("small_model_query.j2", question=item.question, options=item.options,
                            passages=list(passages))


def load_prompts(templates_dir: str | Path | None = None, variant: str | None = None) -> PromptSet:
    """Load and check the templates in `templates_dir` (default: bundled), or its `variant` sub-folder."""
    base = Path(templates_dir) if templates_dir else bundled_templates_dir()
    directory = base / variant if variant else base
    if not directory.is_dir():
        known = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise BladeInputError(directory, f"no such template directory (variants here: {', '.join(known) or 'none'})")
    env = _environment()
    templates, variables = {}, {}
    for name in ALLOWED_VARIABLES:
        path = directory / name
        if path.is_file():
            template, path, used = _load(env, path)
            templates[name], variables[name] = (template, path), used
        elif name in REQUIRED:
            raise BladeInputError(path, "template missing (copy the defaults with `blade-bpo init`)")
    return PromptSet(directory, templates, variables)
