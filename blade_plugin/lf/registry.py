"""What blade-plugin adds to LLaMA-Factory, applied by `lf.hook` right after each target module executes.

- chat templates `blade_chatml` and `blade_qwen` (registered in `llamafactory.data.template`);
- bundled datasets (`blade_demo_corpus`, `blade_demo_kit`) that resolve from any working directory, while a
  user's own `dataset_info.json` entries of the same name still win;
- `${blade:NAME}` placeholders in YAML recipes (`default_model`, `recipes`, `data`), so bundled recipes
  carry no machine-specific absolute paths.
"""

from __future__ import annotations

from pathlib import Path
import json
import logging
import os
import re
from functools import lru_cache
from typing import Any

from ..extras.paths import bundled_data_dir, recipes_dir

logger = logging.getLogger(__name__)

TEMPLATE_NAMES = ("blade_chatml", "blade_qwen")
PLACEHOLDER = re.compile(r"\$\{blade:([a-z_]+)\}")
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def register_templates(module) -> None:
    """Register our chat templates in `llamafactory.data.template` (idempotent)."""
    from llamafactory.data.formatter import StringFormatter

    chatml_turns = dict(
        format_user=StringFormatter(slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]),
        format_assistant=StringFormatter(slots=["{{content}}<|im_end|>\n"]),
        format_system=StringFormatter(slots=["<|im_start|>system\n{{content}}<|im_end|>\n"]),
        format_observation=StringFormatter(
            slots=["<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]
        ),
        # <|im_end|> closes every turn; making it the eos is what stops generation at the turn end.
        stop_words=["<|im_end|>"],
        replace_eos=True,
    )
    if "blade_chatml" not in module.TEMPLATES:
        # ChatML without a default system prompt (SmolLM2 and other ChatML small models).
        module.register_template(name="blade_chatml", **chatml_turns)
    if "blade_qwen" not in module.TEMPLATES:
        # Qwen2.5 (0.5B/1.5B, the paper-recommended small models): ChatML plus Qwen's default system prompt.
        module.register_template(name="blade_qwen", default_system=QWEN_DEFAULT_SYSTEM, **chatml_turns)


@lru_cache(maxsize=1)
def bundled_dataset_info() -> dict[str, dict[str, Any]]:
    """Bundled `dataset_info.json` entries with `file_name` made absolute (so they work from any cwd)."""
    data_dir = bundled_data_dir()
    try:
        with open(data_dir / "dataset_info.json", encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as err:  # a broken install must not break unrelated training runs
        logger.warning("blade-plugin: bundled datasets unavailable (%s)", err)
        return {}
    for attrs in info.values():
        if "file_name" in attrs:
            attrs["file_name"] = str(data_dir / attrs["file_name"])
    return info


def patch_dataset_parser(module) -> None:
    """Wrap `get_dataset_list` so bundled dataset names resolve even without a local dataset_info.json.

    `llamafactory.data.loader` binds the function by name at import time, which happens after this runs.
    """
    original = module.get_dataset_list
    if getattr(original, "_blade_patched", False):
        return

    def get_dataset_list(dataset_names, dataset_dir):
        return original(dataset_names, merge_bundled_datasets(dataset_names, dataset_dir, module.DATA_CONFIG))

    get_dataset_list._blade_patched = True
    get_dataset_list.__wrapped__ = original
    get_dataset_list.__doc__ = original.__doc__
    module.get_dataset_list = get_dataset_list


def merge_bundled_datasets(dataset_names, dataset_dir, config_name: str = "dataset_info.json"):
    """Return `dataset_dir` unchanged, or a dict of the user's entries plus the bundled ones they lack."""
    bundled = bundled_dataset_info()
    wanted = [name for name in dataset_names or [] if name in bundled]
    if not wanted:
        return dataset_dir
    if isinstance(dataset_dir, dict):
        user_info = dataset_dir
    elif dataset_dir == "ONLINE" or str(dataset_dir).startswith("REMOTE:"):
        return dataset_dir
    else:
        config_path = os.path.join(dataset_dir, config_name)
        if not os.path.isfile(config_path):
            user_info = {}
        else:
            try:
                with open(config_path, encoding="utf-8") as f:
                    user_info = json.load(f)
            except (OSError, ValueError):
                return dataset_dir  # let LLaMA-Factory report the broken file in its own words
    merged = {name: bundled[name] for name in wanted if name not in user_info}
    merged.update(user_info)
    return merged


def resolve_placeholder(name: str) -> str:
    if name == "default_model":
        from ..small_lm.default_model import materialize_default_model

        return str(materialize_default_model())
    if name == "recipes":
        return str(recipes_dir())
    if name == "data":
        return str(bundled_data_dir())
    raise ValueError(f"unknown placeholder ${{blade:{name}}} (known: default_model, recipes, data)")


def substitute_placeholders(value: Any) -> Any:
    """Replace `${blade:NAME}` in every string of a (nested) argument structure."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: resolve_placeholder(m.group(1)), value)
    if isinstance(value, dict):
        return {k: substitute_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_placeholders(v) for v in value]
    return value


# TrainingArguments fields whose valid values include "no": YAML 1.1 (OmegaConf.from_cli) reads a bare `no`
# in `save_strategy=no` as False, which transformers rejects ("False is not a valid SaveStrategy").
_NO_STRATEGY_KEYS = ("save_strategy", "eval_strategy", "evaluation_strategy", "logging_strategy")


def coerce_no_strategies(args: Any) -> Any:
    """`save_strategy: False` (YAML's reading of `no`) -> "no" for the strategy keys; anything else unchanged."""
    if isinstance(args, dict):
        return {k: ("no" if k in _NO_STRATEGY_KEYS and v is False else v) for k, v in args.items()}
    return args


def patch_read_args(module) -> None:
    """Wrap `read_args` (YAML + `key=value` overrides -> dict) to expand our placeholders (and read a bare
    `no` as the strategy "no", see `coerce_no_strategies`).

    `llamafactory.hparams` and `llamafactory.train.tuner` import the name after this module executes, so
    they get the wrapped function.
    """
    original = module.read_args
    if getattr(original, "_blade_patched", False):
        return

    def read_args(args=None):
        try:
            raw = original(args)
        except Exception as err:  # noqa: BLE001 (OmegaConf and yaml raise many kinds; all are the file's fault)
            raise SystemExit(f"llamafactory-cli: {_yaml_error_line(err)}") from None
        return coerce_no_strategies(substitute_placeholders(raw))

    read_args._blade_patched = True
    read_args.__wrapped__ = original
    read_args.__doc__ = original.__doc__
    module.read_args = read_args
    parse = getattr(module, "_parse_args", None)
    if parse is not None and not getattr(parse, "_blade_patched", False):
        def _parse_args(parser, args=None, allow_extra_keys=False):
            try:
                return parse(parser, args, allow_extra_keys=allow_extra_keys)
            except ValueError as err:
                unknown = _unused_keys(str(err))
                if unknown is None:
                    raise
                raise SystemExit(f"llamafactory-cli: {_unknown_key_line(unknown[0])}") from None

        _parse_args._blade_patched = True
        _parse_args.__wrapped__ = parse
        module._parse_args = _parse_args


def _config_file() -> Path | None:
    import sys

    return Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].endswith((".yaml", ".yml", ".json")) else None


def _yaml_error_line(err: Exception) -> str:
    """`FILE:LINE: ...` for a recipe that cannot be read (the YAML parser's mark when it has one)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = str(_config_file() or "the command line")
    if mark is not None:
        where += f":{mark.line + 1}"
    message = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    return f"{where}: cannot read the recipe: {message}"


def _unused_keys(message: str) -> list[str] | None:
    """The keys of transformers' "Some keys are not used by the HfArgumentParser: [...]", else None."""
    import ast

    head, sep, rest = message.partition("not used by the HfArgumentParser: ")
    if not sep:
        return None
    try:
        keys = ast.literal_eval(rest.strip())
    except (ValueError, SyntaxError):
        return None
    return [str(k) for k in keys] or None


def _unknown_key_line(key: str) -> str:
    """`FILE:LINE: field 'key': unknown key (did you mean ...?)`: the recipe line, or "command line" for an
    override."""
    import difflib

    line = None
    config = _config_file()
    if config is not None and config.suffix in (".yaml", ".yml"):
        try:
            import yaml

            root = yaml.compose(config.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            line = next((k.start_mark.line + 1 for k, _ in getattr(root, "value", []) if k.value == key), None)
        except (OSError, yaml.YAMLError):
            line = None
    where = f"{config}:{line}" if line else "command line"
    try:
        from llamafactory.hparams.parser import _TRAIN_ARGS
        from dataclasses import fields

        known = sorted({f.name for cls in _TRAIN_ARGS for f in fields(cls)})
    except Exception:  # noqa: BLE001 (a hint only)
        known = []
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: field {key!r}: unknown key{hint}"
