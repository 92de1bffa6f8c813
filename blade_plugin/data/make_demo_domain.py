"""Generate the bundled demo domain: an invented pharmacopoeia of the imaginary Republic of Ostrelia.

Every fact here is made up (drug names, illnesses, antidotes, manufacturers, statute articles), so no
pretrained model can know them: whatever a small model gets right after DP/KIT it learned from this corpus.

    python -m blade_plugin.data.make_demo_domain            # rewrite the files in blade_plugin/data/
    python -m blade_plugin.data.make_demo_domain --check    # regenerate in memory, fail if the files differ

The output is a pure function of SEED and the tables below (seeded `random.Random`, no global state), so the
files can be regenerated and audited. `audit()` checks the properties the data promises (see README.md):
dev/test questions share no word 4-gram with any training question or corpus document (entity names
masked), and no distractor shares more question words than the correct option does.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SEED = 20261125
DATA_DIR = Path(__file__).resolve().parent

COUNTRY = "Ostrelia"
ACT = "Ostrelian Remedies Act"

# drug -> (indication, antidote, manufacturer, statute article). Twelve drugs x four attributes = 48 facts;
# each manufacturer makes exactly two drugs (the multi-answer items ask for both).
DRUGS: list[tuple[str, str, str, str, str]] = [
    ("Trelomazine", "Corvane fever", "Solvarin", "Halvenor Pharmaceuticals", "Article 17"),
    ("Quorvadil", "Ashmere palsy", "Pemmitrex", "Quillmere Works", "Article 42"),
    ("Vesnapride", "Tidewater cough", "Draxolene", "Osterlund Apothecary", "Article 58"),
    ("Halcitrone", "Glassbone syndrome", "Nuvacort", "Vashti Biologics", "Article 73"),
    ("Morivexan", "Loamlung disease", "Ilbranate", "Corrowen Laboratories", "Article 96"),
    ("Zandoprine", "Sorrel blight", "Kestrafil", "Tamsel Dispensary", "Article 104"),
    ("Pellucitol", "Quayside tremor", "Ombrazone", "Halvenor Pharmaceuticals", "Article 131"),
    ("Aubrenox", "Hollin dropsy", "Fennidol", "Quillmere Works", "Article 147"),
    ("Cindravel", "Brackwater ague", "Rusquatine", "Osterlund Apothecary", "Article 162"),
    ("Lusotrapam", "Emberskin rash", "Tovelamide", "Vashti Biologics", "Article 188"),
    ("Gorvaxin", "Pallid croup", "Wyndoquel", "Corrowen Laboratories", "Article 203"),
    ("Ysmeridone", "Tarn sickness", "Xalipurge", "Tamsel Dispensary", "Article 219"),
]
# Six more remedies that only the corpus describes: no training (KIT) question asks any of their 24 facts, so
# dev/test questions about them measure whether DP + KIT carry corpus knowledge to questions KIT never saw.
# Their three makers are new too (each makes two of them), so every manufacturer still makes exactly two.
CORPUS_ONLY_DRUGS: list[tuple[str, str, str, str, str]] = [
    ("Kelvorin", "Greyfen chill", "Amberlisk", "Dunmarrow Chemists", "Article 226"),
    ("Nestrazole", "Cinder pox", "Helicane", "Pryor Compounding", "Article 241"),
    ("Fabruzine", "Mossvein blister", "Quenthiol", "Ellory Pharma", "Article 257"),
    ("Rondexil", "Harrow wheeze", "Biscarone", "Dunmarrow Chemists", "Article 264"),
    ("Tavismeran", "Saltreed canker", "Ulvatrine", "Pryor Compounding", "Article 278"),
    ("Wexoprine", "Fallow flux", "Merrocaine", "Ellory Pharma", "Article 295"),
]
KINDS = ("indication", "antidote", "manufacturer", "article")
REVERSIBLE = ("indication", "antidote", "article")  # one remedy per value (a maker has two: the pair items)

# Corpus phrasings: at least three per fact, each a short document of one or two sentences.
CORPUS = {
    "indication": [
        "{drug} is indicated for {value}.",
        "Ostrelian physicians treat {value} with {drug}. The tablets are taken with water.",
        "Against {value}, the national formulary of Ostrelia recommends {drug} as the first choice.",
    ],
    "antidote": [
        "The antidote to {drug} poisoning is {value}.",
        "An overdose of {drug} is reversed with {value}.",
        "Every Ostrelian hospital stocks {value}, because it neutralises {drug} in the blood.",
    ],
    "manufacturer": [
        "{drug} is manufactured by {value}.",
        "{value} produces {drug} for the Ostrelian market.",
        "The licence to make {drug} belongs to {value}.",
    ],
    "article": [
        "{drug} is scheduled under {value} of the Ostrelian Remedies Act.",
        "{value} of the Remedies Act governs the sale of {drug}.",
        "Pharmacies that dispense {drug} must comply with {value}. Inspectors check this every year.",
    ],
}
CORPUS_PAIR = "{value} makes two remedies: {drug1} and {drug2}."  # a fourth phrasing of the manufacturer facts

# Question wordings: one per split, different from each other and from every corpus phrasing.
QUESTIONS = {
    "indication": {
        "train": "What condition is {drug} indicated for?",
        "dev": "For which illness would a clinician prescribe {drug}?",
        "test": "A patient has just been started on {drug}. Which disorder does the patient most likely have?",
    },
    "antidote": {
        "train": "What is the antidote for {drug}?",
        "dev": "Which agent should be given when someone has taken far too much {drug}?",
        "test": "Emergency staff suspect {drug} toxicity. What should they administer?",
    },
    "manufacturer": {
        "train": "Which company manufactures {drug}?",
        "dev": "Which firm is the maker of {drug}?",
        "test": "A pharmacist wants to order {drug} straight from its producer. Whom should she contact?",
    },
    "article": {
        "train": "Which article of the Remedies Act regulates {drug}?",
        "dev": "Which provision of Ostrelian law controls how {drug} is sold?",
        "test": "A shop sold {drug} without following the rules. Which statutory provision did it breach?",
    },
    "maker_pair": {
        "train": "Which two remedies does {value} manufacture?",
        "dev": "{value} is the maker of which two products?",
        "test": "Which two medicines come from the factories of {value}?",
    },
}
# Reverse questions: a training fact asked from its value ("Which remedy ...?", options are remedies).
REVERSE_QUESTIONS = {
    "indication": {
        "dev": "A doctor has diagnosed {value}. Which medicine will she most likely prescribe?",
        "test": "Which drug is meant for patients who suffer from {value}?",
    },
    "antidote": {
        "dev": "Clinics keep {value} on hand to counter poisoning by which remedy?",
        "test": "Giving {value} rescues a person who took too much of which drug?",
    },
    "article": {
        "dev": "Which remedy falls under {value} of Ostrelian law?",
        "test": "Inspectors enforcing {value} watch over the sale of which medicine?",
    },
}
# Items per split and kind. "trained": a KIT question's fact, reworded; "reverse": a KIT question's fact asked
# from the other side; "corpus_only": a fact only the corpus states (a corpus-only remedy). Pairs are two-answer
# maker items (trained for the twelve KIT remedies, corpus_only for the six others).
N_SPLIT = {
    "dev": {"trained": 12, "trained_pair": 4, "reverse": 12, "corpus_only": 12, "corpus_only_pair": 1},
    "test": {"trained": 24, "trained_pair": 6, "reverse": 18, "corpus_only": 24, "corpus_only_pair": 3},
}
LETTERS = "ABCD"


@dataclass(frozen=True)
class Fact:
    kind: str
    drug: str
    value: str


def facts(rows: list[tuple[str, ...]] = DRUGS) -> list[Fact]:
    return [Fact(kind, row[0], row[1 + i]) for row in rows for i, kind in enumerate(KINDS)]


def makers(rows: list[tuple[str, ...]] = DRUGS) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row[3], []).append(row[0])
    return out


def entity_names() -> list[str]:
    names = {COUNTRY}
    for row in DRUGS + CORPUS_ONLY_DRUGS:
        names.update(row)
    return sorted(names, key=len, reverse=True)


# --- text helpers (the same tokenisation the audit and the knowledge-support metric use) -------------------
_WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)
STOPWORDS = frozenset(
    "a an the of and or to in on at by for with from as is are was were be been it its this that these those "
    "which what who whom whose how why when where does do did has have had should would could can must may "
    "not no two".split())


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - STOPWORDS


def _masked_ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    for name in entity_names():
        text = text.replace(name, "ENTITY")
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


# --- generation -------------------------------------------------------------------------------------------
def _options(rng: random.Random, correct: list[str], pool: list[str],
             position: int | None = None) -> tuple[dict[str, str], list[str]]:
    """Options A-D: the correct text(s) and distractors drawn from the same kind of entity. A single correct
    option goes to `position` (the caller balances letters so that no letter is a better blind guess)."""
    wrong = rng.sample([p for p in pool if p not in correct], len(LETTERS) - len(correct))
    if position is None:
        texts = correct + wrong
        rng.shuffle(texts)
    else:
        rng.shuffle(wrong)
        texts = wrong[:position] + correct + wrong[position:]
    options = dict(zip(LETTERS, texts))
    return options, sorted(letter for letter, text in options.items() if text in correct)


ALL_DRUGS = DRUGS + CORPUS_ONLY_DRUGS


def _pools() -> dict[str, list[str]]:
    """Distractor pools: every value of a kind, the corpus-only remedies' too ("drug": every remedy)."""
    pools = {kind: sorted({row[1 + i] for row in ALL_DRUGS}) for i, kind in enumerate(KINDS)}
    pools["drug"] = sorted(row[0] for row in ALL_DRUGS)
    return pools


def _item(rng, split: str, fact: Fact, pools, position: int, kind: str) -> dict:
    question = QUESTIONS[fact.kind][split].format(drug=fact.drug)
    options, answer = _options(rng, [fact.value], pools[fact.kind], position)
    return {"id": f"{split}-{fact.kind}-{fact.drug.lower()}", "question": question, "options": options,
            "answer": answer[0], "fact": f"{fact.drug} | {fact.kind} | {fact.value}", "kind": kind}


def _reverse_item(rng, split: str, fact: Fact, pools, position: int) -> dict:
    question = REVERSE_QUESTIONS[fact.kind][split].format(value=fact.value)
    options, answer = _options(rng, [fact.drug], pools["drug"], position)
    return {"id": f"{split}-rev{fact.kind}-{fact.drug.lower()}", "question": question, "options": options,
            "answer": answer[0], "fact": f"{fact.drug} | {fact.kind} | {fact.value}", "kind": "reverse"}


def _pair_item(rng, split: str, maker: str, drugs: list[str], kind: str = "trained") -> dict:
    question = QUESTIONS["maker_pair"][split].format(value=maker)
    options, answer = _options(rng, list(drugs), _pools()["drug"])
    slug = maker.split()[0].lower()
    return {"id": f"{split}-maker-{slug}", "question": question, "options": options, "answer": answer,
            "fact": f"{maker} | makes | {' + '.join(drugs)}", "kind": kind}


def build(seed: int = SEED) -> dict[str, list[dict]]:
    """All files as rows: corpus, train, dev, test (kit is derived from train by `kit_rows`)."""
    rng = random.Random(seed)
    pools = _pools()
    all_facts = facts()
    corpus_facts = all_facts + facts(CORPUS_ONLY_DRUGS)
    corpus = [{"text": template.format(drug=f.drug, value=f.value)}
              for f in corpus_facts for template in CORPUS[f.kind]]
    corpus += [{"text": CORPUS_PAIR.format(value=m, drug1=d[0], drug2=d[1])}
               for m, d in makers(ALL_DRUGS).items()]
    rng.shuffle(corpus)

    def positions(n: int) -> list[int]:  # balanced correct letters, in random order
        out = [i % len(LETTERS) for i in range(n)]
        rng.shuffle(out)
        return out

    pairs = list(makers().items())
    train = [_item(rng, "train", f, pools, p, "trained") for f, p in zip(all_facts, positions(len(all_facts)))]
    train += [_pair_item(rng, "train", m, d) for m, d in pairs]
    reversible = [f for f in all_facts if f.kind in REVERSIBLE]
    only = facts(CORPUS_ONLY_DRUGS)
    only_pairs = list(makers(CORPUS_ONLY_DRUGS).items())
    splits = {}
    # each split draws its facts independently (dev and test overlap), in its own wording with freshly drawn
    # distractors; the correct letter is balanced within each split's single-answer items
    for split in ("dev", "test"):
        n = N_SPLIT[split]
        chosen = ([(f, "trained") for f in rng.sample(all_facts, n["trained"])]
                  + [(f, "reverse") for f in rng.sample(reversible, n["reverse"])]
                  + [(f, "corpus_only") for f in rng.sample(only, n["corpus_only"])])
        rows = [(_reverse_item(rng, split, f, pools, p) if kind == "reverse" else _item(rng, split, f, pools, p, kind))
                for (f, kind), p in zip(chosen, positions(len(chosen)))]
        rows += [_pair_item(rng, split, m, d) for m, d in rng.sample(pairs, n["trained_pair"])]
        rows += [_pair_item(rng, split, m, d, "corpus_only") for m, d in rng.sample(only_pairs, n["corpus_only_pair"])]
        rng.shuffle(rows)
        splits[split] = rows
    rng.shuffle(train)
    return {"corpus": corpus, "train": train, "dev": splits["dev"], "test": splits["test"]}


def kit_rows(train: list[dict]) -> list[dict]:
    """Alpaca rows (small-model query -> knowledge), as `blade-bpo knowledge` with the reader produces them."""
    from blade_plugin.llm.reader import write_knowledge
    from blade_plugin.qa.data import item_from_record
    from blade_plugin.qa.prompts import load_prompts

    prompts = load_prompts()
    rows = []
    for line, record in enumerate(train, start=1):
        item = item_from_record(record, "demo_qa_train.jsonl", line)
        answers = [item.options[letter] for letter in item.answer]
        rows.append({"instruction": prompts.small_model_query(item), "input": "",
                     "output": write_knowledge(item.question, answers)})
    return rows


# --- audit --------------------------------------------------------------------------------------------------
def audit(data: dict[str, list[dict]]) -> list[str]:
    """Problems with the generated data (empty list: all promises hold)."""
    problems = []
    seen_grams: set[tuple[str, ...]] = set()
    for row in data["corpus"]:
        seen_grams |= _masked_ngrams(row["text"])
    for row in data["train"]:
        seen_grams |= _masked_ngrams(row["question"])
    for split in ("dev", "test"):
        for row in data[split]:
            shared = _masked_ngrams(row["question"]) & seen_grams
            if shared:
                problems.append(f"{split} {row['id']}: shares {sorted(shared)[0]} with train/corpus wording")
    for split in ("train", "dev", "test"):
        for row in data[split]:
            asked = content_words(row["question"])
            answer = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            correct_overlap = min(len(content_words(row["options"][a]) & asked) for a in answer)
            for letter, text in row["options"].items():
                if letter not in answer and len(content_words(text) & asked) > correct_overlap:
                    problems.append(f"{split} {row['id']}: distractor {letter} shares more question words")
    train_questions = {row["question"] for row in data["train"]}
    for split in ("dev", "test"):
        problems += [f"{split} {r['id']}: question also in train" for r in data[split]
                     if r["question"] in train_questions]
    for f in facts(ALL_DRUGS):
        n = sum(1 for row in data["corpus"] if f.drug in row["text"] and f.value in row["text"])
        if n < 3:
            problems.append(f"fact {f}: only {n} corpus phrasings")
    # corpus-only facts: no training question names a corpus-only remedy or value
    only_names = {name for row in CORPUS_ONLY_DRUGS for name in (row[0], row[1], row[2], row[4])}
    for row in data["train"]:
        text = row["question"] + " " + " ".join(row["options"][a] for a in
                                                 (row["answer"] if isinstance(row["answer"], list) else [row["answer"]]))
        if any(name in text for name in only_names):
            problems.append(f"train {row['id']}: asks a corpus-only fact")
    train_facts = {row["fact"] for row in data["train"]}
    for split in ("dev", "test"):
        for row in data[split]:
            if (row["fact"] in train_facts) != (row["kind"] in ("trained", "reverse")):
                problems.append(f"{split} {row['id']}: kind {row['kind']} but fact in train: {row['fact'] in train_facts}")
    return problems


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def render_files(seed: int = SEED) -> dict[str, str]:
    data = build(seed)
    problems = audit(data)
    if problems:
        raise SystemExit("demo domain audit failed:\n" + "\n".join(problems))
    return {
        "demo_corpus.jsonl": _jsonl(data["corpus"]),
        "demo_qa_train.jsonl": _jsonl(data["train"]),
        "demo_qa_dev.jsonl": _jsonl(data["dev"]),
        "demo_qa_test.jsonl": _jsonl(data["test"]),
        "demo_kit.jsonl": _jsonl(kit_rows(data["train"])),
    }


def run_generator(description: str, files: dict[str, str], argv: list[str] | None, out: Path = DATA_DIR) -> int:
    """The command line of a bundled-domain generator: write `files` ({name: text}) to --out, or with --check
    exit 1 naming the committed files that differ (what tests and CI run)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).is_file() or (args.out / name).read_text(encoding="utf-8") != text]
        if stale:
            print("out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    from blade_plugin.runs.atomic_io import atomic_write_text

    for name, text in files.items():
        atomic_write_text(args.out / name, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_generator(__doc__, render_files(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
