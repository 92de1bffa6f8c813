"""Arguments of `blade-bpo split` (the raw files themselves are its positional RAW arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .job_args import _format, _skip_invalid


@dataclass
class SplitArguments:
    out_dir: str = field(metadata={
        "required": True, "path": "dir",
        "help": "Writes train.jsonl, dev.jsonl, test.jsonl and split.json here (never over existing files)."})
    n_dev: int = field(default=None, metadata={"option": "--dev", "required": True, "min": 0,
                                               "help": "Dev records (BPO's objective)."})
    n_test: int = field(default=None, metadata={"option": "--test", "required": True, "min": 0,
                                                "help": "Test records (evaluate, ablate)."})
    seed: int = field(default=0, metadata={"min": 0, "show_default": True,
                                           "help": "Seeds the draw: the same files and seed give the same split."})
    fmt: str = _format()
    group_by: str = field(default="type", metadata={
        "show_default": True,
        "help": "Record field the draw is stratified by and the counts are reported by ('' for none; MLEC-QA: "
                "qtype)."})
    corpus: str | None = field(default=None, metadata={
        "path": "file",
        "help": "Also write the training part as a DP corpus ({\"text\": question + correct options} a line) and "
                "register it (name: the file stem) in the dataset_info.json of its directory."})
    skip_invalid: bool = _skip_invalid()
