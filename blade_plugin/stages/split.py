"""`blade-bpo split`: train/dev/test files from raw training files, deterministic for a seed.

JEC-QA's public test file carries no answers, so the paper's setting needs dev and test questions cut from
the training files. The split keeps every record as it was (raw JEC-QA / MLEC-QA or generic fields, in their
order; one JSON object a line), so the loaders read the parts exactly as they read the source, and
`--group-by type` still finds the field. Every record is validated first with the loaders' own reader
(file:line:field errors); nothing is written until all records passed, and no existing file is replaced.

The draw is stratified by a field (`type` by default: JEC-QA's knowledge-driven "0" vs case-analysis "1"):
each group gets its share of dev and test by largest remainder, and the questions inside a group are drawn
with `random.Random(f"{seed}:{group}")`, so the same files and seed always give the same split, whatever
the order of the groups.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..extras.errors import BladeError, BladeInputError
from ..qa.data import SKIP_HINT, _records, detect_format, item_from_record
from ..runs.atomic_io import atomic_write_json, atomic_write_text
from ..runs.fingerprint import digest_file

logger = logging.getLogger(__name__)

PARTS = ("train", "dev", "test")
MANIFEST = "split.json"
NO_GROUP = "(none)"


@dataclass
class RawRecord:
    source: Path
    line: int
    record: dict
    item_id: str
    group: str
    text: str  # the record as written to the split file: one JSON line, fields and order kept


@dataclass
class SplitResult:
    files: dict[str, Path]
    counts: dict[str, dict[str, int]]  # part -> group -> count
    format: str
    group_by: str | None
    skipped: list[str] = field(default_factory=list)
    corpus: Path | None = None

    def summary_lines(self) -> list[str]:
        groups = sorted({g for part in self.counts.values() for g in part})
        label = self.group_by or "group"
        lines = [f"{part}: {sum(self.counts[part].values())} records -> {self.files[part]}"
                 + (" (" + ", ".join(f"{label} {g}: {self.counts[part].get(g, 0)}" for g in groups) + ")"
                    if self.group_by else "") for part in PARTS]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} invalid record(s), listed in {MANIFEST} (first: "
                         f"{self.skipped[0]})")
        if self.corpus is not None:
            lines.append(f"DP corpus (train questions with their correct options): {self.corpus}, registered as "
                         f"'{self.corpus.stem}' in {self.corpus.parent / 'dataset_info.json'}")
        return lines


def output_paths(out_dir: Path) -> dict[str, Path]:
    return {part: out_dir / f"{part}.jsonl" for part in PARTS}


def read_raw(paths: list[Path], fmt: str = "auto", group_by: str | None = "type",
             skip_invalid: bool = False) -> tuple[list[RawRecord], str, list[str]]:
    """Every record of `paths`, validated as `load_qa` would read it; (records, format, skipped)."""
    records: list[RawRecord] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    file_fmt: str | None = None
    for path in paths:
        if not path.is_file():
            raise BladeInputError(path, "file not found")
        rows = _records(path)
        if not rows:
            raise BladeInputError(path, "no QA items in file")
        this_fmt = detect_format(rows[0][1]) if fmt == "auto" else fmt
        if file_fmt is not None and this_fmt != file_fmt:
            raise BladeInputError(path, f"is {this_fmt} but {paths[0]} is {file_fmt}: split one format at a time")
        file_fmt = this_fmt
        for line, record, _ in rows:
            try:
                item = item_from_record(record, path, line, this_fmt)
                if item.id in seen:
                    raise BladeInputError(path, f"duplicate id {item.id!r} (first at {seen[item.id]})", line=line,
                                          field="id")
                if group_by and group_by not in record:
                    raise BladeInputError(path, f"missing (the split is stratified by it; pass --group-by '' "
                                                f"for none)", line=line, field=group_by)
            except BladeInputError as err:
                if not skip_invalid:
                    err.args = (f"{err.args[0]}; {SKIP_HINT}",)
                    raise
                skipped.append(str(err))
                continue
            seen[item.id] = f"{path}:{line}"
            group = str(record[group_by]) if group_by else NO_GROUP
            records.append(RawRecord(path, line, record, item.id, group, json.dumps(record, ensure_ascii=False)))
    if not records:
        raise BladeError(f"no valid records in {', '.join(map(str, paths))} ({len(skipped)} invalid skipped)")
    return records, file_fmt or "generic", skipped


def allocate(group_sizes: dict[str, int], total: int) -> dict[str, int]:
    """`total` spread over the groups in proportion to their sizes, by largest remainder (ties: larger group,
    then group name), never more than a group holds."""
    n = sum(group_sizes.values())
    if total == 0 or n == 0:
        return {g: 0 for g in group_sizes}
    exact = {g: total * size / n for g, size in group_sizes.items()}
    shares = {g: int(x) for g, x in exact.items()}
    order = sorted(group_sizes, key=lambda g: (-(exact[g] - shares[g]), -group_sizes[g], g))
    for g in order[: total - sum(shares.values())]:
        shares[g] += 1
    return {g: min(shares[g], group_sizes[g]) for g in group_sizes}


def draw(records: list[RawRecord], n_dev: int, n_test: int, seed: int) -> dict[str, list[RawRecord]]:
    """Stratified, deterministic assignment to train/dev/test; each part keeps the source order."""
    if n_dev + n_test >= len(records):
        raise BladeError(f"--dev {n_dev} + --test {n_test} leaves no training record of {len(records)}; "
                         "ask for fewer")
    by_group: dict[str, list[int]] = {}
    for index, rec in enumerate(records):
        by_group.setdefault(rec.group, []).append(index)
    sizes = {g: len(ix) for g, ix in by_group.items()}
    dev_shares = allocate(sizes, n_dev)
    test_shares = allocate({g: sizes[g] - dev_shares[g] for g in sizes}, n_test)
    assigned: dict[int, str] = {}
    for group in sorted(by_group):
        indices = list(by_group[group])
        random.Random(f"{seed}:{group}").shuffle(indices)
        dev_end = dev_shares[group]
        test_end = dev_end + test_shares[group]
        for position, index in enumerate(indices):
            assigned[index] = "dev" if position < dev_end else "test" if position < test_end else "train"
    parts: dict[str, list[RawRecord]] = {part: [] for part in PARTS}
    for index, rec in enumerate(records):
        parts[assigned[index]].append(rec)
    return parts


def corpus_text(record: dict, fmt: str) -> str:
    """A DP document from a training record: the question and the text of its correct option(s)."""
    item = item_from_record(record, "corpus", 0, fmt)
    if item.options is None:
        return f"{item.question}\n{item.answer}"
    return item.question + "\n" + "\n".join(item.options[letter] for letter in item.answer)


def split_raw(paths: list[Path], out_dir: Path, n_dev: int, n_test: int, seed: int, fmt: str = "auto",
              group_by: str | None = "type", skip_invalid: bool = False, corpus: Path | None = None) -> SplitResult:
    """Validate, draw and write train/dev/test (+ split.json, + an optional DP corpus); refuse to overwrite."""
    from ..runs.outputs import Output, check_outputs

    files = output_paths(out_dir)
    targets = [*files.values(), out_dir / MANIFEST] + ([corpus] if corpus is not None else [])
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise BladeError(f"refusing to overwrite {', '.join(existing)}: remove them or choose another --out-dir")
    check_outputs([Output("--out-dir", p) for p in [*files.values(), out_dir / MANIFEST]]
                  + ([Output("--corpus", corpus)] if corpus is not None else []), [("RAW", p) for p in paths])
    records, file_fmt, skipped = read_raw(paths, fmt, group_by, skip_invalid)
    parts = draw(records, n_dev, n_test, seed)
    counts = {part: dict(sorted(Counter(r.group for r in rows).items())) for part, rows in parts.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        atomic_write_text(files[part], "".join(r.text + "\n" for r in rows))
    if corpus is not None:
        corpus.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(corpus, "".join(json.dumps({"text": corpus_text(r.record, file_fmt)}, ensure_ascii=False)
                                          + "\n" for r in parts["train"]))
    manifest = {
        "sources": [{"path": str(p), "sha256": digest_file(p)} for p in paths],
        "format": file_fmt, "seed": seed, "dev": n_dev, "test": n_test, "group_by": group_by,
        "counts": counts, "files": {part: str(p) for part, p in files.items()},
        "ids": {part: [r.item_id for r in rows] for part, rows in parts.items() if part != "train"},
        "corpus": str(corpus) if corpus is not None else None,
        "skipped_invalid": {"count": len(skipped), "records": skipped},
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    if corpus is not None:
        from ..lf.dataset_info import register_dataset

        register_dataset(corpus.stem, corpus, corpus.parent, formatting="pt")
    return SplitResult(files, counts, file_fmt, group_by, skipped, corpus)
