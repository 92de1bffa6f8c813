"""The click side of `hparams/`: options generated from an argument dataclass's fields, so each option's
help, environment variable, range and default are written once (in the dataclass), and the command receives
one dataclass instance instead of a dozen loose keyword arguments."""

from __future__ import annotations

import functools
import math
from dataclasses import MISSING, fields

import click

from ..hparams import (EvaluateArguments, KnowledgeArguments, LLMArguments, OptimizeArguments, SmallModelArguments,
                       SplitArguments)
from .error_options import MaxErrors


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (FloatRange's comparisons let nan through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _click_type(spec: dict, annotation: str):
    if spec.get("kind") == "max_errors":
        return MaxErrors()
    if "choices" in spec:
        return click.Choice(list(spec["choices"]))
    if "path" in spec:
        return click.Path(exists=spec.get("exists", False), file_okay=spec["path"] != "dir",
                          dir_okay=spec["path"] != "file")
    bounds = {key: spec[key] for key in ("min", "max", "min_open") if key in spec}
    if annotation.startswith("float"):
        if spec.get("finite"):
            return FiniteFloatRange(**bounds)
        return click.FloatRange(**bounds) if bounds else float
    if annotation.startswith("int"):
        return click.IntRange(**bounds) if bounds else int
    return None


def _option(f) -> click.Option:
    spec = dict(f.metadata)
    name = spec.get("option", "--" + f.name.replace("_", "-"))
    kwargs: dict = {"help": spec.get("help")}
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory is not MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = None  # a required field
    if spec.get("flag"):
        kwargs["is_flag"] = True
    else:
        kwargs["default"] = None if spec.get("multiple") else default
        click_type = _click_type(spec, str(f.type))
        if click_type is not None:
            kwargs["type"] = click_type
    if spec.get("multiple"):
        kwargs["multiple"] = True
    if spec.get("required"):
        kwargs.update(required=True, default=None)
    if spec.get("hidden"):
        kwargs["hidden"] = True
    if spec.get("show_default"):
        kwargs["show_default"] = True
    if "metavar" in spec:
        kwargs["metavar"] = spec["metavar"]
    if "envvar" in spec:
        kwargs.update(envvar=spec["envvar"], show_envvar=True)
    return click.option(name, f.name, **kwargs)


def field_option(cls, name: str):
    """The click option of one field of `cls`, for a command not converted to a dataclass yet (`ablate`)."""
    return _option(next(f for f in fields(cls) if f.name == name))


def arguments(cls, dest: str):
    """Decorator: add an option per field of `cls` and pass the command `dest=cls(...)` built from them."""
    names = [f.name for f in fields(cls)]

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in names}
            for f in fields(cls):
                if f.metadata.get("multiple"):
                    values[f.name] = tuple(values[f.name] or ())
            kwargs[dest] = cls(**values)
            return func(*args, **kwargs)

        for f in reversed(fields(cls)):
            wrapper = _option(f)(wrapper)
        return wrapper

    return decorate


llm_options = arguments(LLMArguments, "llm_args")
small_model_options = arguments(SmallModelArguments, "small_args")
knowledge_arguments = arguments(KnowledgeArguments, "args")
evaluate_arguments = arguments(EvaluateArguments, "args")
optimize_arguments = arguments(OptimizeArguments, "args")
split_arguments = arguments(SplitArguments, "args")
