"""Read and write `blade.yaml`: the pipeline's keys (pipeline_args.py) plus LLaMA-Factory training keys.

Every problem is one line naming the file, the line and the key, raised before anything trains or spends: a key
blade does not know is an error (a typo must never fall back to a default silently), and so is a value of the
wrong type or range. Command-line overrides are `key=value` as `llamafactory-cli train` takes them (the value
is read as YAML) and are checked the same way, named "command line".
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..extras.errors import BladeInputError
from ..runs.atomic_io import read_text_file
from .pipeline_args import EMBEDDED_MODEL, SECTIONS, PipelineArguments

# Keys of LLaMA-Factory's that `run` sets itself from the pipeline's own keys.
RESERVED_LF_KEYS = {
    "dataset": "the corpus and the KIT data are registered by `run` (set corpus / train)",
    "dataset_dir": "`run` registers its datasets in OUTPUT_DIR/data",
    "eval_dataset": "`run` trains on the whole corpus and KIT data",
    "output_dir": "set output_dir (the models go to OUTPUT_DIR/saves)",
    "stage": "DP is stage pt and KIT stage sft",
    "do_train": "both stages train",
    "num_train_epochs": "set dp_num_train_epochs / kit_num_train_epochs",
    "learning_rate": "set dp_learning_rate / kit_learning_rate",
    "per_device_train_batch_size": "set dp_per_device_train_batch_size / kit_per_device_train_batch_size",
    "cutoff_len": "set dp_cutoff_len / kit_cutoff_len",
    "max_steps": "set dp_max_steps / kit_max_steps",
    "packing": "set dp_packing",
}
STAGE_PREFIXES = ("dp_", "kit_")


@functools.lru_cache(maxsize=1)
def llamafactory_keys() -> frozenset[str]:
    """Every argument LLaMA-Factory's `train` accepts (its hparams dataclasses and transformers' trainer's)."""
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from llamafactory.hparams.training_args import TrainingArguments

    return frozenset(f.name for cls in (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments,
                                        TrainingArguments) for f in fields(cls))


@dataclass
class PipelineConfig:
    """A checked blade.yaml: the pipeline's arguments (paths made absolute) and the LLaMA-Factory keys that pass
    through to the trainings (`both`, `dp`, `kit`), each as the user wrote it."""

    args: PipelineArguments
    source: Path
    lf_both: dict[str, Any] = field(default_factory=dict)
    lf_dp: dict[str, Any] = field(default_factory=dict)
    lf_kit: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    def as_dict(self) -> dict[str, Any]:
        """Every setting, for the report and the stage keys."""
        values = {f.name: getattr(self.args, f.name) for f in fields(self.args)}
        values.update(self.lf_both)
        values.update({f"dp_{k}": v for k, v in self.lf_dp.items()})
        values.update({f"kit_{k}": v for k, v in self.lf_kit.items()})
        return values


def _spec(name: str):
    return next((f for f in fields(PipelineArguments) if f.name == name), None)


def _check_value(name: str, value: Any, where: tuple[Path | str, int | None]) -> Any:
    """The value of a pipeline key converted to its type, or a one-line error."""
    spec = _spec(name)
    meta = spec.metadata
    kind = str(spec.type)

    def fail(message: str):
        raise BladeInputError(where[0], message, line=where[1], field=name)

    if value is None:
        if spec.default is not None and not meta.get("required") and name != "small_backend_urls":
            fail(f"must not be empty (default: {spec.default!r})")
        return [] if name == "small_backend_urls" else None
    if "choices" in meta:
        # YAML reads `true`/`false` as booleans: a choice of "true" / "false" takes them as the words
        if isinstance(value, bool):
            value = str(value).lower()
        if value not in meta["choices"]:
            shown = ", ".join("null" if c is None else str(c) for c in meta["choices"])
            fail(f"{value!r} is not one of {shown}")
        return value
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected a whole number, got {value!r}")
    elif kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            fail(f"expected a finite number, got {value!r}")
    elif kind.startswith("list"):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in items):
            fail(f"expected a list of URLs, got {value!r}")
        return items
    elif not isinstance(value, str) or not value:
        fail(f"expected text, got {value!r}")
    low = meta.get("min")
    if low is not None and (value < low or (meta.get("min_open") and value == low)):
        fail(f"must be {'>' if meta.get('min_open') else '>='} {low}, got {value!r}")
    return value


def _lf_target(key: str) -> tuple[str, str] | None:
    """("both" | "dp" | "kit", LLaMA-Factory key) for a pass-through key, or None if it is none."""
    lf = llamafactory_keys()
    if key in lf:
        return "both", key
    for prefix in STAGE_PREFIXES:
        if key.startswith(prefix) and key[len(prefix):] in lf:
            return prefix[:-1], key[len(prefix):]
    return None


def _suggest(key: str) -> str:
    names = [f.name for f in fields(PipelineArguments)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    if not close:  # a shortened name: dp_epoch -> dp_num_train_epochs
        prefix = key.split("_", 1)[0] + "_"
        close = [n for n in names if n.startswith(prefix) and key[len(prefix):].rstrip("s") in n]
    if not close:
        close = difflib.get_close_matches(key, sorted(llamafactory_keys()), n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse_yaml(path: Path) -> list[tuple[str, Any, int]]:
    """(key, value, line) of each top-level key of the YAML file; syntax errors name their line."""
    text = read_text_file(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise BladeInputError(path, f"YAML syntax error: {err.problem or err}",
                              line=mark.line + 1 if mark else None) from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise BladeInputError(path, "expected a mapping of key: value lines", line=root.start_mark.line + 1)
    entries, seen = [], {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise BladeInputError(path, "a key must be a plain name", line=line)
        key = key_node.value
        if key in seen:
            raise BladeInputError(path, f"given twice (first on line {seen[key]})", line=line, field=key)
        seen[key] = line
        try:
            value = yaml.SafeLoader(yaml.serialize(value_node)).get_single_data()
        except yaml.YAMLError as err:
            raise BladeInputError(path, f"unreadable value: {err}", line=line, field=key) from None
        entries.append((key, value, line))
    return entries


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """`key=value` words, the value read as YAML (as llamafactory-cli's overrides are)."""
    parsed = []
    for word in overrides:
        key, sep, raw = word.partition("=")
        key = key.strip().lstrip("-").replace("-", "_") if key.startswith("--") else key.strip()
        if not sep or not key:
            raise BladeInputError("command line", f"expected key=value, got {word!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key, value))
    return parsed


def load_pipeline_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read `path` and apply `key=value` overrides; every key, type, range and required path is checked."""
    path = Path(path)
    if not path.is_file():
        raise BladeInputError(path, "no such file (write one with `blade-bpo init DIR`)")
    base = path.resolve().parent
    entries = [(k, v, (path, line)) for k, v, line in _parse_yaml(path)]
    entries += [(k, v, ("command line", None)) for k, v in parse_overrides(overrides)]
    values: dict[str, Any] = {}
    lf: dict[str, dict[str, Any]] = {"both": {}, "dp": {}, "kit": {}}
    for key, value, where in entries:
        if _spec(key) is not None:
            values[key] = _check_value(key, value, where)
            continue
        if key in RESERVED_LF_KEYS:
            raise BladeInputError(where[0], f"set by `blade-bpo run`: {RESERVED_LF_KEYS[key]}", line=where[1],
                                  field=key)
        target = _lf_target(key)
        if target is None:
            raise BladeInputError(where[0], f"unknown key (neither a blade.yaml key nor a LLaMA-Factory training "
                                            f"key{_suggest(key)}); `blade-bpo run --help` lists the keys",
                                  line=where[1], field=key)
        lf[target[0]][target[1]] = value
    lines = {key: where for key, _, where in entries}
    missing = [f.name for f in fields(PipelineArguments) if f.metadata.get("required") and values.get(f.name) is None]
    if missing:
        raise BladeInputError(path, f"required key missing or empty: {', '.join(missing)}",
                              line=lines[missing[0]][1] if missing[0] in lines else None, field=missing[0])
    for f in fields(PipelineArguments):
        value = values.get(f.name)
        if not f.metadata.get("path") or value in (None, EMBEDDED_MODEL):
            continue
        resolved = (base / Path(value).expanduser()).resolve() if not Path(value).expanduser().is_absolute() \
            else Path(value).expanduser()
        if f.name != "output_dir" and not resolved.exists():
            where = lines.get(f.name, (path, None))
            raise BladeInputError(where[0], f"{resolved} does not exist", line=where[1], field=f.name)
        if f.name in ("corpus", "train", "dev", "test", "kit_fallback") and not resolved.is_file():
            where = lines.get(f.name, (path, None))
            raise BladeInputError(where[0], f"{resolved} is a directory, not a file", line=where[1], field=f.name)
        values[f.name] = str(resolved)
    if values.get("output_dir") is None:
        values["output_dir"] = str(base / _spec("output_dir").default)
    args = PipelineArguments(**values)
    if args.small_backend_urls is None:
        args.small_backend_urls = []
    if args.templates_dir and args.query_options:
        where = lines.get("query_options", (path, None))
        raise BladeInputError(where[0], "applies to the bundled prompts only; with templates_dir, edit "
                              "small_model_query.j2 there", line=where[1], field="query_options")
    return PipelineConfig(args, path.resolve(), lf["both"], lf["dp"], lf["kit"])


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        text = repr(value)
        return text if "e" not in text else f"{value:.1e}"
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


def render_blade_yaml(values: dict[str, Any] | None = None, header: str = "", extra: dict[str, Any] | None = None,
                      comments: dict[str, str] | None = None) -> str:
    """A blade.yaml with every key, its value (the default unless `values` says otherwise) and its help as a
    comment, grouped by section; `extra` adds LLaMA-Factory keys at the end, `comments` replaces a key's help."""
    values = values or {}
    comments = comments or {}
    out = [header.rstrip() + "\n"] if header else []
    section = None
    for f in fields(PipelineArguments):
        meta = f.metadata
        if meta["section"] != section:
            section = meta["section"]
            out.append(f"\n### {SECTIONS[section]}\n")
        default = f.default if f.default is not MISSING else None
        value = values.get(f.name, default)
        out.append(f"{f.name}: {_yaml_value(value)}  # {comments.get(f.name, meta['help'])}\n")
    if extra:
        out.append("\n### LLaMA-Factory keys of this preset\n")
        out += [f"{key}: {_yaml_value(value)}\n" for key, value in extra.items()]
    return "".join(out)


def keys_help() -> str:
    """The keys for `--help`: name, default and help, one a line."""
    lines = []
    for f in fields(PipelineArguments):
        default = "required" if f.metadata.get("required") else _yaml_value(f.default)
        lines.append(f"{f.name} [{default}]: {f.metadata['help']}")
    return "\n".join(lines)
