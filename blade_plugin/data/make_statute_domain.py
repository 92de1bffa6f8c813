"""Generate the second bundled domain: an invented statute code in Chinese, in raw JEC-QA format.

The 《澜泽商事条例》 of the imaginary state of 澜泽 regulates twelve trades (盐引转让, 渡船租赁, ...): for each,
the article that governs it, its limitation period, the office in charge and the penalty. Every fact is made
up, so a pretrained model cannot know it. Six trades are asked about in the training (KIT) questions; six
others only the corpus states, and the test set mostly asks those. Some questions are two-hop (the article
-> the trade it governs -> that trade's penalty or period), JEC-QA's `type` 1 (case analysis); one-hop
questions are `type` 0 (knowledge-driven). Records are raw JEC-QA (`statement`, `option_list`, `answer` as a
list, `type`) plus `kind` (trained / corpus_only / two_hop) and `fact`, which BLADE's prompts never use.

    python -m blade_plugin.data.make_statute_domain            # rewrite the files in blade_plugin/data/
    python -m blade_plugin.data.make_statute_domain --check    # fail if the committed files differ

A pure function of SEED and the tables below; `audit()` checks what README.md promises.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20261201
DATA_DIR = Path(__file__).resolve().parent
PREFIX = "statute"

# trade -> (article, limitation period, office in charge, penalty). Each office is in charge of two trades.
TRADES: list[tuple[str, str, str, str, str]] = [
    ("盐引转让", "第十七条", "三个月", "盐务司", "罚银五十两"),
    ("渡船租赁", "第四十二条", "六个月", "漕运署", "扣押船只"),
    ("茶号登记", "第五十八条", "九个月", "市舶司", "吊销茶号"),
    ("银票挂失", "第七十三条", "一年", "典当监", "追缴票银"),
    ("驿站寄存", "第九十六条", "十八个月", "漕运署", "停业三旬"),
    ("织坊学徒契约", "第一百零四条", "二年", "织造局", "解除契约"),
    # corpus-only: no training question asks any fact of these six
    ("矿井分租", "第一百三十一条", "三年", "盐务司", "封闭矿井"),
    ("渔场界址", "第一百四十七条", "四年", "渔政署", "没收渔具"),
    ("酒坊课税", "第一百六十二条", "五年", "市舶司", "加征倍税"),
    ("书坊刻版", "第一百八十八条", "七年", "织造局", "焚毁刻版"),
    ("马市担保", "第二百零三条", "十年", "典当监", "责令赔偿"),
    ("漕粮代运", "第二百一十九条", "二十年", "渔政署", "枷号示众"),
]
N_TRAINED = 6
RELATIONS = ("article", "period", "office", "penalty")
CODE = "《澜泽商事条例》"

CORPUS = {
    "article": ["{trade}之事，规定于{code}{value}。", "{code}{value}专门调整{trade}。",
                "凡涉及{trade}的纠纷，均依{value}处理。"],
    "period": ["{trade}纠纷的诉讼时效为{value}。", "因{trade}发生争议的，应当在{value}内起诉。",
               "{trade}案件逾{value}不起诉的，官府不再受理。"],
    "office": ["{trade}由{value}主管。", "{value}负责监督{trade}事务。", "办理{trade}手续，须向{value}申报。"],
    "penalty": ["违反{trade}规定者，{value}。", "{trade}中有欺诈行为的，处以{value}。",
                "对违规{trade}的商户，官府可以{value}。"],
}
CORPUS_PAIR = "{value}主管两类事务：{trade1}与{trade2}。"

QUESTIONS = {
    "article": {"train": "{trade}规定在哪一条？",
                "dev": "处理一宗{trade}纠纷时，应当援引条例的哪个条文？",
                "test": "甲乙二人因{trade}起了争执，诉至官府。主审官应适用哪一条？"},
    "period": {"train": "{trade}纠纷的诉讼时效是多长？",
               "dev": "关于{trade}的争议，当事人最迟须在多长期间内起诉？",
               "test": "商人丙在{trade}中受损，想要告官。他起诉的期限是多久？"},
    "office": {"train": "{trade}由哪个机关主管？",
               "dev": "哪一官署对{trade}负有监管职责？",
               "test": "商户丁打算开展{trade}，应当去哪个衙门办理？"},
    "penalty": {"train": "违反{trade}规定的后果是什么？",
                "dev": "{trade}中的违规者会受到何种处罚？",
                "test": "戊在{trade}时弄虚作假被查获。依条例应当如何处置？"},
    "office_pair": {"train": "{value}主管哪两类事务？",
                    "dev": "下列事务中，属于{value}职掌的有哪些？",
                    "test": "以下哪两项事务须向{value}报备？"},
}
# two-hop: the article names the trade, the trade's period/penalty is asked (type 1, case analysis)
TWO_HOP = {
    "penalty": {"dev": "某商户违反了条例{article}所调整的事务。依条例，他将受到何种处罚？",
                "test": "己违反了{article}的规定，被人告发。按条例应当对其如何处置？"},
    "period": {"dev": "一宗纠纷属于条例{article}所调整的事务，其起诉期限有多久？",
               "test": "庚的纠纷适用{article}。他至迟应在多长期间内起诉？"},
}
N_SPLIT = {  # items per kind; pairs are two-answer office items
    "dev": {"trained": 8, "corpus_only": 12, "two_hop": 6, "trained_pair": 1, "corpus_only_pair": 1},
    "test": {"trained": 6, "corpus_only": 20, "two_hop": 10, "trained_pair": 1, "corpus_only_pair": 1},
}
LETTERS = "ABCD"


@dataclass(frozen=True)
class Fact:
    relation: str
    trade: str
    value: str


def facts(rows) -> list[Fact]:
    return [Fact(rel, row[0], row[1 + i]) for row in rows for i, rel in enumerate(RELATIONS)]


def offices(rows) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row[3], []).append(row[0])
    return out


def _pools() -> dict[str, list[str]]:
    pools = {rel: sorted({row[1 + i] for row in TRADES}) for i, rel in enumerate(RELATIONS)}
    pools["trade"] = sorted(row[0] for row in TRADES)
    return pools


def _options(rng, correct: list[str], pool: list[str], position: int | None = None):
    wrong = rng.sample([p for p in pool if p not in correct], len(LETTERS) - len(correct))
    if position is None:
        texts = correct + wrong
        rng.shuffle(texts)
    else:
        rng.shuffle(wrong)
        texts = wrong[:position] + correct + wrong[position:]
    options = dict(zip(LETTERS, texts))
    return options, sorted(k for k, v in options.items() if v in correct)


def _record(split, ident, statement, options, answer, kind, fact, qtype) -> dict:
    return {"answer": answer, "id": f"{split}-{ident}", "option_list": options, "statement": statement,
            "type": qtype, "kind": kind, "fact": fact}


def _item(rng, split, fact: Fact, pools, position, kind) -> dict:
    options, answer = _options(rng, [fact.value], pools[fact.relation], position)
    return _record(split, f"{fact.relation}-{TRADES_INDEX[fact.trade]}",
                   QUESTIONS[fact.relation][split].format(trade=fact.trade), options, answer, kind,
                   f"{fact.trade} | {fact.relation} | {fact.value}", 0)


def _two_hop(rng, split, row, relation, pools, position) -> dict:
    value = row[1 + RELATIONS.index(relation)]
    options, answer = _options(rng, [value], pools[relation], position)
    return _record(split, f"hop{relation}-{TRADES_INDEX[row[0]]}", TWO_HOP[relation][split].format(article=row[1]),
                   options, answer, "two_hop", f"{row[1]} -> {row[0]} | {relation} | {value}", 1)


def _pair(rng, split, office, trades, kind) -> dict:
    options, answer = _options(rng, list(trades), _pools()["trade"])
    return _record(split, f"office-{office}", QUESTIONS["office_pair"][split].format(value=office), options, answer,
                   kind, f"{office} | office of | {' + '.join(trades)}", 0)


TRADES_INDEX = {row[0]: i for i, row in enumerate(TRADES)}


def build(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    pools = _pools()
    trained_rows, only_rows = TRADES[:N_TRAINED], TRADES[N_TRAINED:]
    corpus = [{"text": t.format(trade=f.trade, value=f.value, code=CODE)}
              for f in facts(TRADES) for t in CORPUS[f.relation]]
    corpus += [{"text": CORPUS_PAIR.format(value=o, trade1=t[0], trade2=t[1])} for o, t in offices(TRADES).items()]
    rng.shuffle(corpus)

    def positions(n):
        out = [i % len(LETTERS) for i in range(n)]
        rng.shuffle(out)
        return out

    trained = facts(trained_rows)
    # pair items ask an office whose two trades are both trained (漕运署) or both corpus-only (渔政署)
    trained_names, only_names = {r[0] for r in trained_rows}, {r[0] for r in only_rows}
    trained_pairs = [(o, t) for o, t in offices(TRADES).items() if set(t) <= trained_names]
    only_pairs = [(o, t) for o, t in offices(TRADES).items() if set(t) <= only_names]
    train = [_item(rng, "train", f, pools, p, "trained") for f, p in zip(trained, positions(len(trained)))]
    train += [_pair(rng, "train", o, t, "trained") for o, t in trained_pairs]
    splits = {}
    for split in ("dev", "test"):
        n = N_SPLIT[split]
        chosen = [(f, "trained") for f in rng.sample(trained, n["trained"])]
        chosen += [(f, "corpus_only") for f in rng.sample(facts(only_rows), n["corpus_only"])]
        hops = [(row, rel) for row in TRADES for rel in TWO_HOP]
        hop_chosen = rng.sample(hops, n["two_hop"])
        pos = positions(len(chosen) + len(hop_chosen))
        rows = [_item(rng, split, f, pools, p, kind) for (f, kind), p in zip(chosen, pos)]
        rows += [_two_hop(rng, split, row, rel, pools, p) for (row, rel), p in zip(hop_chosen, pos[len(chosen):])]
        rows += [_pair(rng, split, o, t, "trained") for o, t in rng.sample(trained_pairs, min(n["trained_pair"],
                                                                                           len(trained_pairs)))]
        rows += [_pair(rng, split, o, t, "corpus_only") for o, t in rng.sample(only_pairs, n["corpus_only_pair"])]
        rng.shuffle(rows)
        splits[split] = rows
    rng.shuffle(train)
    return {"corpus": corpus, "train": train, "dev": splits["dev"], "test": splits["test"]}


def _masked_grams(text: str, n: int = 5) -> set[str]:
    for name in sorted({x for row in TRADES for x in row} | {CODE}, key=len, reverse=True):
        text = text.replace(name, "＃")
    text = "".join(ch for ch in text if ch not in "，。？：、《》")
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def audit(data: dict[str, list[dict]]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for row in data["corpus"]:
        seen |= _masked_grams(row["text"])
    for row in data["train"]:
        seen |= _masked_grams(row["statement"])
    for split in ("dev", "test"):
        for row in data[split]:
            shared = _masked_grams(row["statement"]) & seen
            if shared:
                problems.append(f"{split} {row['id']}: shares {sorted(shared)[0]!r} with train/corpus wording")
    only = {x for row in TRADES[N_TRAINED:] for x in (row[0], row[1], row[2], row[4])}
    for row in data["train"]:
        text = row["statement"] + "".join(row["option_list"][a] for a in row["answer"])
        if any(name in text for name in only):
            problems.append(f"train {row['id']}: asks a corpus-only fact")
    for f in facts(TRADES):
        n = sum(1 for row in data["corpus"] if f.trade in row["text"] and f.value in row["text"])
        if n < 3:
            problems.append(f"fact {f}: only {n} corpus phrasings")
    for split in ("train", "dev", "test"):
        ids = [row["id"] for row in data[split]]
        if len(ids) != len(set(ids)):
            problems.append(f"{split}: duplicate ids")
    return problems


def kit_rows(train: list[dict]) -> list[dict]:
    """Alpaca rows as `blade-bpo knowledge --variant zh_legal` with the offline reader writes them."""
    from blade_plugin.llm.reader import write_knowledge
    from blade_plugin.qa.data import item_from_record
    from blade_plugin.qa.prompts import load_prompts

    prompts = load_prompts(variant="zh_legal")
    rows = []
    for line, record in enumerate(train, start=1):
        item = item_from_record(record, f"{PREFIX}_qa_train.json", line, "jecqa")
        rows.append({"instruction": prompts.small_model_query(item), "input": "",
                     "output": write_knowledge(item.question, [item.options[a] for a in item.answer], chinese=True)})
    return rows


def _jsonl(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def render_files(seed: int = SEED) -> dict[str, str]:
    data = build(seed)
    problems = audit(data)
    if problems:
        raise SystemExit("statute domain audit failed:\n" + "\n".join(problems))
    return {f"{PREFIX}_corpus.jsonl": _jsonl(data["corpus"]), f"{PREFIX}_qa_train.json": _jsonl(data["train"]),
            f"{PREFIX}_qa_dev.json": _jsonl(data["dev"]), f"{PREFIX}_qa_test.json": _jsonl(data["test"]),
            f"{PREFIX}_kit.jsonl": _jsonl(kit_rows(data["train"]))}


def main(argv: list[str] | None = None) -> int:
    from blade_plugin.data.make_demo_domain import run_generator

    return run_generator(__doc__, render_files(), argv, DATA_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
