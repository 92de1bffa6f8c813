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
from collections import Counter
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
def _seen_grams(data: dict[str, list[dict]]) -> set[tuple[str, ...]]:
    """The masked word n-grams of the corpus and the training questions (new questions must share none)."""
    grams: set[tuple[str, ...]] = set()
    for row in data["corpus"]:
        grams |= _masked_ngrams(row["text"])
    for row in data["train"]:
        grams |= _masked_ngrams(row["question"])
    return grams


def audit(data: dict[str, list[dict]]) -> list[str]:
    """Problems with the generated data (empty list: all promises hold)."""
    problems = []
    seen_grams = _seen_grams(data)
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


# --- the large dev/test splits (issue 29: evidence with power) ---------------------------------------------
# A second, independent generator over the SAME corpus facts: it reads nothing of build()'s random stream, so
# the five files above stay byte-identical. Facts are split between the two files by manufacturer: all facts
# of a maker's two remedies (and its two-answer item) are asked in dev_large or in test_large, never both, so
# settings chosen on dev_large meet test_large's facts for the first time. With 72 facts (+ 9 pairs) and
# 450+ questions, each fact is asked several times, in different question forms, with fresh distractors.
LARGE_SEED = 20261207
LARGE_MAKERS = {"dev_large": (2, 1), "test_large": (4, 2)}  # (trained makers, corpus-only makers) per split
LARGE_FORWARD_PER_FACT = 4  # forward questions per fact (of the six wordings below)
LARGE_FROM_VALUE_PER_FACT = {"reverse": 2, "corpus_only": 3}  # from-value questions per fact (maker: 2, below)
LARGE_PAIR_PER_MAKER = 2  # two-answer items per maker (of the four wordings)

# Wordings that avoid the corpus sentences' and the earlier splits' relation words (indicated, treat, antidote,
# overdose, reversed, neutralises, manufactured, produces, licence, scheduled, governs, Remedies Act, ...):
# synonyms and situations instead, so retrieval must match the entity names, not the sentence.
LARGE_FORWARD = {
    "indication": [
        "Which ailment is {drug} used to cure?",
        "{drug} was developed to combat which malady?",
        "Someone whose prescription lists {drug} is most probably being cured of what?",
        "What complaint does a course of {drug} address?",
        "A course of {drug} is the cure for which of these ailments?",
        "Sufferers of which affliction are put on {drug}?",
    ],
    "antidote": [
        "Which counteragent undoes an excess dose of {drug}?",
        "If a child swallows a whole bottle of {drug}, which rescue medicine is called for?",
        "What cancels out the effects of too much {drug}?",
        "Toxicologists counter an excess of {drug} with which compound?",
        "Which compound is the remedy when a person has swallowed dangerous amounts of {drug}?",
        "Which drug serves as the countermeasure to {drug} intoxication?",
    ],
    "manufacturer": [
        "Whose production line turns out {drug}?",
        "{drug} rolls off the assembly line of which enterprise?",
        "Which business supplies {drug} to wholesalers?",
        "The packaging of {drug} carries the name of which company?",
        "Which drug house is behind {drug}?",
        "Which enterprise owns the formula of {drug}?",
    ],
    "article": [
        "Which clause of the statute does {drug} fall within?",
        "Which section of the country's drug code covers {drug}?",
        "A lawyer defending a seller of {drug} would cite which clause?",
        "Which legal clause sets the conditions for selling {drug}?",
        "The trade in {drug} is controlled by which clause of the code?",
        "Which numbered clause of the statute book concerns {drug}?",
    ],
}
# From the value's side ("Which remedy ...?", options are remedies). A maker makes two remedies: its from-value
# items are single-answer with the other remedy left out of the options, and the four wordings are shared out
# between the two remedies (two each), so no two questions read the same.
LARGE_FROM_VALUE = {
    "indication": [
        "Which medicine is the standard cure for {value}?",
        "A person diagnosed with {value} would be handed which drug?",
        "{value} is kept in check with which preparation?",
        "Which preparation cures {value}?",
    ],
    "antidote": [
        "{value} is kept ready to undo an excess of which medicine?",
        "Which drug's toxic effects does {value} cancel?",
        "An excess of which preparation calls for {value}?",
        "{value} is the rescue medicine after too much of which drug?",
    ],
    "article": [
        "Which preparation is the subject of {value}?",
        "{value} sets the rules for selling which medicine?",
        "Which medicine is covered by {value}?",
        "A seller of which drug must follow {value}?",
    ],
    "manufacturer": [
        "Which of these preparations comes from {value}?",
        "{value} supplies which of the following medicines?",
        "Which one of these drugs is a product of {value}?",
        "Among these medicines, which one leaves the plant of {value}?",
    ],
}
LARGE_PAIR = [
    "Which two products leave the plant of {value}?",
    "{value} turns out which pair of medicines?",
    "Name both preparations that {value} supplies.",
    "The catalogue of {value} lists which two items?",
]


def _row_of(drug: str) -> tuple[str, ...]:
    return next(row for row in ALL_DRUGS if row[0] == drug)


def _sibling(drug: str) -> str:
    """The other remedy of the same maker."""
    maker = _row_of(drug)[3]
    return next(d for d in makers(ALL_DRUGS)[maker] if d != drug)


def _large_options(rng: random.Random, correct: list[str], pool: list[str], near: list[str], exclude: list[str],
                   position: int | None) -> tuple[dict[str, str], list[str]]:
    """Options whose distractors are other entities the corpus names: one `near` entity (the sibling remedy's
    value, which the corpus names beside the same maker) when there is one, the rest drawn from the pool."""
    banned = set(correct) | set(exclude)
    near = [n for n in near if n not in banned][:1]
    rest = rng.sample([p for p in pool if p not in banned and p not in near], len(LETTERS) - len(correct) - len(near))
    wrong = near + rest
    rng.shuffle(wrong)
    if position is None:
        texts = correct + wrong
        rng.shuffle(texts)
    else:
        texts = wrong[:position] + correct + wrong[position:]
    options = dict(zip(LETTERS, texts))
    return options, sorted(letter for letter, text in options.items() if text in correct)


def large_split_makers(seed: int = LARGE_SEED) -> dict[str, list[str]]:
    """Which makers' facts each large split asks (drawn once, seeded)."""
    rng = random.Random(seed)
    trained, only = list(makers(DRUGS)), list(makers(CORPUS_ONLY_DRUGS))
    rng.shuffle(trained)
    rng.shuffle(only)
    (dev_t, dev_o), (test_t, test_o) = LARGE_MAKERS["dev_large"], LARGE_MAKERS["test_large"]
    assert dev_t + test_t == len(trained) and dev_o + test_o == len(only)
    return {"dev_large": sorted(trained[:dev_t] + only[:dev_o]), "test_large": sorted(trained[dev_t:] + only[dev_o:])}


def build_large(seed: int = LARGE_SEED) -> dict[str, list[dict]]:
    """The large dev/test splits: {"dev_large": rows, "test_large": rows} (same row format as dev/test, plus
    `form`: forward / from_value / pair)."""
    split_makers = large_split_makers(seed)
    rng = random.Random(seed + 1)
    pools = _pools()
    trained_drugs = {row[0] for row in DRUGS}
    all_makers = makers(ALL_DRUGS)
    # the maker from-value wordings, shared out between a maker's two remedies (two each)
    maker_wordings: dict[str, list[str]] = {}
    for maker, (d1, d2) in sorted(all_makers.items()):
        order = list(LARGE_FROM_VALUE["manufacturer"])
        rng.shuffle(order)
        maker_wordings[d1], maker_wordings[d2] = order[:2], order[2:]
    out = {}
    for split in ("dev_large", "test_large"):
        plans = []  # (fact, kind, form, wording) of the single-answer items
        for maker in split_makers[split]:
            for drug in all_makers[maker]:
                trained = drug in trained_drugs
                for fact in facts([_row_of(drug)]):
                    kind = "trained" if trained else "corpus_only"
                    for wording in rng.sample(LARGE_FORWARD[fact.kind], LARGE_FORWARD_PER_FACT):
                        plans.append((fact, kind, "forward", wording))
                    kind = "reverse" if trained else "corpus_only"
                    wordings = (maker_wordings[drug] if fact.kind == "manufacturer" else
                                rng.sample(LARGE_FROM_VALUE[fact.kind], LARGE_FROM_VALUE_PER_FACT[kind]))
                    plans += [(fact, kind, "from_value", w) for w in wordings]
        positions = [i % len(LETTERS) for i in range(len(plans))]
        rng.shuffle(positions)
        rows = []
        for (fact, kind, form, wording), position in zip(plans, positions):
            number = (LARGE_FORWARD if form == "forward" else LARGE_FROM_VALUE)[fact.kind].index(wording) + 1
            if form == "forward":
                sibling_value = _row_of(_sibling(fact.drug))[1 + KINDS.index(fact.kind)]
                question = wording.format(drug=fact.drug)
                options, answer = _large_options(rng, [fact.value], pools[fact.kind], [sibling_value], [], position)
                ident = f"{split}-{fact.kind}-{fact.drug.lower()}-{number}"
            else:
                sibling = _sibling(fact.drug)
                near, exclude = ([], [sibling]) if fact.kind == "manufacturer" else ([sibling], [])
                question = wording.format(value=fact.value)
                options, answer = _large_options(rng, [fact.drug], pools["drug"], near, exclude, position)
                ident = f"{split}-rev{fact.kind}-{fact.drug.lower()}-{number}"
            rows.append({"id": ident, "question": question, "options": options, "answer": answer[0],
                         "fact": f"{fact.drug} | {fact.kind} | {fact.value}", "kind": kind, "form": form})
        for maker in split_makers[split]:
            drugs = all_makers[maker]
            kind = "trained" if drugs[0] in trained_drugs else "corpus_only"
            for wording in rng.sample(LARGE_PAIR, LARGE_PAIR_PER_MAKER):
                options, answer = _large_options(rng, list(drugs), pools["drug"], [], [], None)
                rows.append({"id": f"{split}-maker-{maker.split()[0].lower()}-{LARGE_PAIR.index(wording) + 1}",
                             "question": wording.format(value=maker), "options": options, "answer": answer,
                             "fact": f"{maker} | makes | {' + '.join(drugs)}", "kind": kind, "form": "pair"})
        rng.shuffle(rows)
        out[split] = rows
    return out


def audit_large(large: dict[str, list[dict]], data: dict[str, list[dict]]) -> list[str]:
    """What the large splits promise (README.md), against the base files `data` (build())."""
    problems = []
    seen_grams = _seen_grams(data)
    old_questions = {row["question"] for split in ("train", "dev", "test") for row in data[split]}
    train_facts = {row["fact"] for row in data["train"]}
    questions: set[str] = set()
    subjects = {}
    for split, rows in large.items():
        if len({r["id"] for r in rows}) != len(rows):
            problems.append(f"{split}: duplicate ids")
        for row in rows:
            shared = _masked_ngrams(row["question"]) & seen_grams
            if shared:
                problems.append(f"{split} {row['id']}: shares {sorted(shared)[0]} with train/corpus wording")
            if row["question"] in old_questions or row["question"] in questions:
                problems.append(f"{split} {row['id']}: question text not new")
            questions.add(row["question"])
            asked = content_words(row["question"])
            answer = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            correct_overlap = min(len(content_words(row["options"][a]) & asked) for a in answer)
            if any(len(content_words(text) & asked) > correct_overlap
                   for letter, text in row["options"].items() if letter not in answer):
                problems.append(f"{split} {row['id']}: a distractor shares more question words")
            if len(set(row["options"].values())) != len(LETTERS):
                problems.append(f"{split} {row['id']}: repeated option")
            if row["form"] == "pair":
                maker, _, value = row["fact"].split(" | ")
                drugs = value.split(" + ")
                if makers(ALL_DRUGS)[maker] != drugs or sorted(row["options"][a] for a in answer) != sorted(drugs):
                    problems.append(f"{split} {row['id']}: wrong pair")
                fact_in_train = row["fact"] in train_facts
            else:
                drug, relation, value = row["fact"].split(" | ")
                if _row_of(drug)[1 + KINDS.index(relation)] != value:
                    problems.append(f"{split} {row['id']}: fact not in the tables")
                gold = row["options"][answer[0]]
                named = drug if row["form"] == "forward" else value
                if gold != (value if row["form"] == "forward" else drug) or named not in row["question"]:
                    problems.append(f"{split} {row['id']}: gold or question does not match the fact")
                if row["form"] == "from_value" and any(_row_of(o)[1 + KINDS.index(relation)] == value
                                                       for k, o in row["options"].items() if k not in answer):
                    problems.append(f"{split} {row['id']}: a distractor remedy has the same {relation}")
                fact_in_train = row["fact"] in train_facts
                if fact_in_train and row["kind"] != ("trained" if row["form"] == "forward" else "reverse"):
                    problems.append(f"{split} {row['id']}: kind {row['kind']} for a {row['form']} training fact")
                maker = _row_of(drug)[3]
            if fact_in_train == (row["kind"] == "corpus_only"):
                problems.append(f"{split} {row['id']}: kind {row['kind']} but fact in train: {fact_in_train}")
            subjects.setdefault(maker, set()).add(split)
        singles = Counter(r["answer"] for r in rows if not isinstance(r["answer"], list))
        if max(singles.values()) - min(singles.values()) > 1:
            problems.append(f"{split}: correct letters unbalanced {dict(singles)}")
    problems += [f"maker {m}: facts asked in both large splits" for m, s in subjects.items() if len(s) > 1]
    if len(large["dev_large"]) < 150 or len(large["test_large"]) < 300:
        problems.append("large splits too small")
    return problems


def render_large_files(data: dict[str, list[dict]] | None = None, seed: int = LARGE_SEED) -> dict[str, str]:
    large = build_large(seed)
    problems = audit_large(large, data if data is not None else build())
    if problems:
        raise SystemExit("demo domain large-split audit failed:\n" + "\n".join(problems))
    return {f"demo_qa_{split}.jsonl": _jsonl(rows) for split, rows in large.items()}


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
        **render_large_files(data),
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
