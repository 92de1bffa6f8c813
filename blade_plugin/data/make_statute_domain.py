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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from blade_plugin.data.make_demo_domain import _large_options  # the same draw of distractors

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


def _seen_grams(data: dict[str, list[dict]]) -> set[str]:
    """The masked character n-grams of the corpus and the training statements (new questions must share none)."""
    seen: set[str] = set()
    for row in data["corpus"]:
        seen |= _masked_grams(row["text"])
    for row in data["train"]:
        seen |= _masked_grams(row["statement"])
    return seen


def audit(data: dict[str, list[dict]]) -> list[str]:
    problems = []
    seen = _seen_grams(data)
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


# --- the large dev/test splits (issue 29: evidence with power) ---------------------------------------------
# An independent generator over the SAME corpus facts (its own seed; build()'s files stay byte-identical).
# Facts are split between the two files by trade: every fact of a trade (and every two-hop question through
# it) is asked in dev_large or in test_large, never both. The two offices whose two trades are of one kind
# (漕运署: two trained trades, 渔政署: two corpus-only ones) keep both trades in test_large, so test_large has
# the two-answer items and dev_large has none; the other trades are drawn: two trained and two corpus-only
# ones to dev_large, the rest to test_large.
LARGE_SEED = 20261207
LARGE_DEV_TRADES = (2, 2)  # (trained, corpus-only) trades asked in dev_large; test_large asks the other eight
LARGE_FORWARD_PER_FACT = 5  # of the six wordings below
LARGE_FROM_VALUE_PER_FACT = 2  # of the three (office: the two of the four that are this trade's, below)
LARGE_HOPS_PER_TRADE = 10  # each of the eight two-hop relations once, two of them in both wordings
LARGE_PAIR_PER_OFFICE = 3

# Wordings without the corpus's and the training questions' relation words (纠纷, 诉讼时效, 起诉, 主管, 规定,
# 违反, 处以, 申报, ...): synonyms (争端/讼事, 提告/告官/呈控, 期限, 管辖/统辖, 触犯/违背, 惩处/制裁/罚则, 备案).
LARGE_FORWARD = {
    "article": ["{trade}方面的争端，应以条例中哪一条文为据？", "审理{trade}一类讼事，当引用第几条？",
                "条例哪一条专就{trade}作出安排？", "若要查阅{trade}的法条，应翻到条例第几条？",
                "{trade}所依据的条文是哪一条？", "关于{trade}的条款编号是多少？"],
    "period": ["{trade}的争端，须在多久之内告官？", "因{trade}吃亏的一方，最晚要在多长时间内提告？",
               "{trade}一事，过了多久再去衙门呈控便无人理会？", "对于{trade}，法定的提告期限为多久？",
               "{trade}中受害的商人，告状的期限是多少？", "就{trade}提出讼请，条例给了多长的期限？"],
    "office": ["{trade}归哪个衙门管辖？", "经营{trade}的店家，受哪一官署统辖？", "{trade}事宜的主理机构是哪个？",
               "谁是{trade}的监管衙署？", "开办{trade}，须到哪个衙门备案？", "{trade}出了问题，应由哪一官署过问？"],
    "penalty": ["触犯{trade}相关条款的人，会被如何惩处？", "{trade}里坑蒙拐骗，条例的罚则是什么？",
                "违背{trade}章程者，将承担何种后果？", "{trade}之中有人舞弊，官署会怎样惩治？",
                "对在{trade}中犯禁的人，条例定下的制裁是什么？", "{trade}若有不法情事，依条例应受何种制裁？"],
}
# From the value's side (options are trades). An office runs two trades: its from-value items are single-answer
# with the other trade left out of the options, and its four wordings are shared out between the two trades.
LARGE_FROM_VALUE = {
    "article": ["条例{value}所针对的是哪一类行当？", "援引{value}的讼事，牵涉的是哪项营生？", "{value}管的是什么事？"],
    "period": ["哪一类行当的提告期限为{value}？", "条例给哪项营生定下了{value}的告官期限？",
               "若某类争端须在{value}之内呈控，它说的是哪项行当？"],
    "office": ["下列行当中，归{value}管辖的是哪一项？", "{value}统辖下列哪一项营生？", "以下哪一项须到{value}备案？",
               "{value}过问的是下列哪项行当？"],
    "penalty": ["哪项营生的犯禁者会被{value}？", "以{value}作为罚则的，是哪一类行当？",
                "若某店家因舞弊而遭{value}，他经营的是哪项行当？"],
}
LARGE_PAIR = ["{value}管辖的是下列哪两项行当？", "须向{value}备案的营生有哪两项？", "{value}统辖的两类营生是？"]
# Two-hop (type 1): a value of the trade names it (its article, period or penalty), another value is asked.
LARGE_TWO_HOP = {
    ("article", "period"): ["某争端适用条例{source}，当事人最晚要在多久之内告官？", "辛的讼事归{source}管，他的提告期限是多少？"],
    ("article", "penalty"): ["壬触犯了{source}所管的行当，会受到怎样的惩处？",
                             "有店家在{source}牵涉的营生中舞弊，依条例会被如何制裁？"],
    ("article", "office"): ["{source}所涉营生，由哪个衙门管辖？", "办理{source}所针对的行当，须到哪一官署备案？"],
    ("period", "penalty"): ["提告期限为{source}的那类行当，犯禁者会受何种惩处？",
                            "某营生的告官期限是{source}，其中舞弊者会被怎样制裁？"],
    ("penalty", "period"): ["犯禁者会被{source}的那项营生，提告期限为多久？",
                            "某类行当以{source}为罚则，这类争端须在多长时间内呈控？"],
    ("period", "article"): ["告官期限为{source}的营生，对应条例第几条？", "某类争端须在{source}内呈控，它归条例哪一条管？"],
    ("penalty", "article"): ["罚则为{source}的营生，由条例哪一条管？", "会被{source}的犯禁行为，出自哪一条文所管的行当？"],
    ("period", "office"): ["提告期限为{source}的营生，归哪个衙门统辖？", "某类争端须在{source}内呈控，这类营生由哪一官署过问？"],
}


def _sibling_trade(trade: str) -> str:
    office = TRADES[TRADES_INDEX[trade]][3]
    return next(t for t in offices(TRADES)[office] if t != trade)


def _value(trade: str, relation: str) -> str:
    return TRADES[TRADES_INDEX[trade]][1 + RELATIONS.index(relation)]


def large_split_trades(seed: int = LARGE_SEED) -> dict[str, list[str]]:
    """Which trades' facts each large split asks (drawn once, seeded)."""
    rng = random.Random(seed)
    names = [row[0] for row in TRADES]
    trained, only = names[:N_TRAINED], names[N_TRAINED:]
    pure = {t for ts in offices(TRADES).values() if set(ts) <= set(trained) or set(ts) <= set(only) for t in ts}
    free_t, free_o = [t for t in trained if t not in pure], [t for t in only if t not in pure]
    rng.shuffle(free_t)
    rng.shuffle(free_o)
    dev = free_t[:LARGE_DEV_TRADES[0]] + free_o[:LARGE_DEV_TRADES[1]]
    return {"dev_large": [t for t in names if t in dev], "test_large": [t for t in names if t not in dev]}


def build_large(seed: int = LARGE_SEED) -> dict[str, list[dict]]:
    """{"dev_large": records, "test_large": records}: raw JEC-QA records as build()'s, plus `form` (forward /
    from_value / pair / two_hop)."""
    split_trades = large_split_trades(seed)
    rng = random.Random(seed + 1)
    pools = _pools()
    trained_names = {row[0] for row in TRADES[:N_TRAINED]}
    office_wordings: dict[str, list[str]] = {}
    for office, (t1, t2) in offices(TRADES).items():
        order = list(LARGE_FROM_VALUE["office"])
        rng.shuffle(order)
        office_wordings[t1], office_wordings[t2] = order[:2], order[2:]
    hops = list(LARGE_TWO_HOP)
    out = {}
    for split in ("dev_large", "test_large"):
        plans = []  # single-answer items: (trade, relation, kind, form, wording, source relation)
        for trade in split_trades[split]:
            kind = "trained" if trade in trained_names else "corpus_only"
            for relation in RELATIONS:
                plans += [(trade, relation, kind, "forward", w, None)
                          for w in rng.sample(LARGE_FORWARD[relation], LARGE_FORWARD_PER_FACT)]
                wordings = (office_wordings[trade] if relation == "office" else
                            rng.sample(LARGE_FROM_VALUE[relation], LARGE_FROM_VALUE_PER_FACT))
                plans += [(trade, relation, kind, "from_value", w, None) for w in wordings]
            twice = set(rng.sample(hops, LARGE_HOPS_PER_TRADE - len(hops)))
            for source, target in hops:
                wordings = LARGE_TWO_HOP[(source, target)] if (source, target) in twice else \
                    [rng.choice(LARGE_TWO_HOP[(source, target)])]
                plans += [(trade, target, "two_hop", "two_hop", w, source) for w in wordings]
        positions = [i % len(LETTERS) for i in range(len(plans))]
        rng.shuffle(positions)
        rows = []
        for (trade, relation, kind, form, wording, source), position in zip(plans, positions):
            value, sibling = _value(trade, relation), _sibling_trade(trade)
            index = TRADES_INDEX[trade]
            if form == "forward":
                statement = wording.format(trade=trade)
                options, answer = _large_options(rng, [value], pools[relation], [_value(sibling, relation)], [],
                                                 position)
                ident, fact = f"{relation}-{index}-{LARGE_FORWARD[relation].index(wording) + 1}", \
                    f"{trade} | {relation} | {value}"
            elif form == "from_value":
                statement = wording.format(value=value)
                near, exclude = ([], [sibling]) if relation == "office" else ([sibling], [])
                options, answer = _large_options(rng, [trade], pools["trade"], near, exclude, position)
                ident, fact = f"rev{relation}-{index}-{LARGE_FROM_VALUE[relation].index(wording) + 1}", \
                    f"{trade} | {relation} | {value}"
            else:
                named = _value(trade, source)
                statement = wording.format(source=named)
                options, answer = _large_options(rng, [value], pools[relation], [_value(sibling, relation)], [],
                                                 position)
                ident = f"hop{source}{relation}-{index}-{LARGE_TWO_HOP[(source, relation)].index(wording) + 1}"
                fact = f"{named} -> {trade} | {relation} | {value}"
            record = _record(split, ident, statement, options, answer, kind, fact, 1 if form == "two_hop" else 0)
            rows.append({**record, "form": form})
        for office, pair in offices(TRADES).items():
            if not set(pair) <= set(split_trades[split]) or (pair[0] in trained_names) != (pair[1] in trained_names):
                continue  # two-answer items ask an office whose two trades are both trained or both corpus-only
            kind = "trained" if pair[0] in trained_names else "corpus_only"
            for wording in rng.sample(LARGE_PAIR, LARGE_PAIR_PER_OFFICE):
                options, answer = _large_options(rng, list(pair), pools["trade"], [], [], None)
                ident = f"office-{office}-{LARGE_PAIR.index(wording) + 1}"
                record = _record(split, ident, wording.format(value=office),
                                 options, answer, kind, f"{office} | office of | {' + '.join(pair)}", 0)
                rows.append({**record, "form": "pair"})
        rng.shuffle(rows)
        out[split] = rows
    return out


def audit_large(large: dict[str, list[dict]], data: dict[str, list[dict]]) -> list[str]:
    """What the large splits promise (README.md), against the base files `data` (build())."""
    problems = []
    seen = _seen_grams(data)
    old = {row["statement"] for split in ("train", "dev", "test") for row in data[split]}
    train_trades = {row[0] for row in TRADES[:N_TRAINED]}
    asked_in_train = {row["fact"] for row in data["train"]}
    statements: set[str] = set()
    where: dict[str, set[str]] = {}
    for split, rows in large.items():
        if len({r["id"] for r in rows}) != len(rows):
            problems.append(f"{split}: duplicate ids")
        for row in rows:
            shared = _masked_grams(row["statement"]) & seen
            if shared:
                problems.append(f"{split} {row['id']}: shares {sorted(shared)[0]!r} with train/corpus wording")
            if row["statement"] in old or row["statement"] in statements:
                problems.append(f"{split} {row['id']}: statement not new")
            statements.add(row["statement"])
            if len(set(row["option_list"].values())) != len(LETTERS):
                problems.append(f"{split} {row['id']}: repeated option")
            gold = [row["option_list"][a] for a in row["answer"]]
            if row["form"] == "pair":
                office, _, value = row["fact"].split(" | ")
                trades = value.split(" + ")
                if offices(TRADES)[office] != trades or sorted(gold) != sorted(trades):
                    problems.append(f"{split} {row['id']}: wrong pair")
                kind_ok = row["kind"] == ("trained" if row["fact"] in asked_in_train else "corpus_only")
            else:
                subject, relation, value = row["fact"].split(" | ")
                trade = subject.split(" -> ")[-1]
                if _value(trade, relation) != value:
                    problems.append(f"{split} {row['id']}: fact not in the tables")
                if row["form"] == "from_value":
                    ok = gold == [trade] and value in row["statement"] and not any(
                        _value(t, relation) == value for k, t in row["option_list"].items() if k not in row["answer"])
                elif row["form"] == "two_hop":  # the statement names the first hop's value, not the trade
                    ok = gold == [value] and subject.split(" -> ")[0] in row["statement"] \
                        and trade not in row["statement"]
                else:
                    ok = gold == [value] and trade in row["statement"]
                if not ok:
                    problems.append(f"{split} {row['id']}: gold, options or statement do not match the fact")
                if row["form"] == "two_hop":
                    kind_ok = row["kind"] == "two_hop" and row["type"] == 1
                else:
                    own_kind = "trained" if trade in train_trades else "corpus_only"
                    kind_ok = row["kind"] == own_kind and row["type"] == 0
                trades = [trade]
            if not kind_ok:
                problems.append(f"{split} {row['id']}: kind {row['kind']} does not match its fact")
            for trade in trades:
                where.setdefault(trade, set()).add(split)
        singles = Counter(r["answer"][0] for r in rows if len(r["answer"]) == 1)
        if max(singles.values()) - min(singles.values()) > 1:
            problems.append(f"{split}: correct letters unbalanced {dict(singles)}")
    problems += [f"trade {t}: asked in both large splits" for t, s in where.items() if len(s) > 1]
    if len(large["dev_large"]) < 150 or len(large["test_large"]) < 300:
        problems.append("large splits too small")
    return problems


def render_large_files(data: dict[str, list[dict]] | None = None, seed: int = LARGE_SEED) -> dict[str, str]:
    large = build_large(seed)
    problems = audit_large(large, data if data is not None else build())
    if problems:
        raise SystemExit("statute domain large-split audit failed:\n" + "\n".join(problems))
    return {f"{PREFIX}_qa_{split}.json": _jsonl(rows) for split, rows in large.items()}


def render_files(seed: int = SEED) -> dict[str, str]:
    data = build(seed)
    problems = audit(data)
    if problems:
        raise SystemExit("statute domain audit failed:\n" + "\n".join(problems))
    return {f"{PREFIX}_corpus.jsonl": _jsonl(data["corpus"]), f"{PREFIX}_qa_train.json": _jsonl(data["train"]),
            f"{PREFIX}_qa_dev.json": _jsonl(data["dev"]), f"{PREFIX}_qa_test.json": _jsonl(data["test"]),
            f"{PREFIX}_kit.jsonl": _jsonl(kit_rows(data["train"])), **render_large_files(data)}


def main(argv: list[str] | None = None) -> int:
    from blade_plugin.data.make_demo_domain import run_generator

    return run_generator(__doc__, render_files(), argv, DATA_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
