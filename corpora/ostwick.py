"""Shipped corpus 2: the municipal code of Ostwick, an invented town.

A different domain and register from corpus 1: long chapters with numbered sections and
clauses, definitions and fee tables, so a verdict is never tuned to one corpus.
"""

from __future__ import annotations

import random

from ragft.corpora.common import Fact, fix_articles, for_split, jsonl, knowledge_rows, markdown_table

SEED = 7_331
NAME = "ostwick"
DEPARTMENTS = ["Planning", "Environment", "Licensing", "Highways", "Parks"]

# topic, permit name, activity (gerund phrase), limited thing (unit), department
TOPICS = [
    (
        "Residential Parking",
        "residential parking permit",
        "parking on a residential street",
        "vehicles per household",
        "Highways",
    ),
    ("Waste Collection", "bulky waste collection permit", "putting bins out", "bin bags per collection", "Environment"),
    (
        "Noise Control",
        "amplified sound permit",
        "playing amplified music outdoors",
        "decibels at the boundary",
        "Environment",
    ),
    ("Dog Ownership", "dog licence", "walking dogs off the lead in parks", "dogs per walker", "Parks"),
    ("Street Trading", "street trading licence", "trading from a pitch", "square metres per pitch", "Licensing"),
    (
        "Building Works",
        "minor works permit",
        "operating power tools on a building site",
        "storeys for a minor works extension",
        "Planning",
    ),
    ("Tree Preservation", "tree works consent", "felling trees", "trees per consent", "Planning"),
    ("Garden Bonfires", "bonfire notice", "lighting a garden bonfire", "bonfires per month", "Environment"),
    ("Town Markets", "market stall licence", "setting up a market stall", "stalls per trader", "Licensing"),
    ("Allotments", "allotment tenancy", "using a motorised tiller on an allotment", "plots per tenant", "Parks"),
    ("River Moorings", "mooring permit", "mooring a boat at the town quay", "nights per stay", "Highways"),
    ("Cemetery Grounds", "memorial permit", "maintaining a grave plot", "memorial height in centimetres", "Parks"),
    (
        "Public Library",
        "library events licence",
        "hosting an event in the library hall",
        "guests per event",
        "Licensing",
    ),
    ("Swimming Baths", "lane hire permit", "hiring a swimming lane", "swimmers per lane", "Parks"),
    ("Holiday Lets", "holiday let registration", "checking guests in to a holiday let", "guests per let", "Licensing"),
    ("Shop Signage", "sign consent", "lighting an illuminated shop sign", "signs per shopfront", "Planning"),
    ("Public Events", "event licence", "running an outdoor event", "attendees per event", "Licensing"),
    (
        "Taxis and Private Hire",
        "taxi driver badge",
        "plying for hire at the station rank",
        "passengers per taxi",
        "Licensing",
    ),
    (
        "Cycling",
        "cycle hire operator licence",
        "riding bicycles in the market square",
        "hire bikes per dock",
        "Highways",
    ),
    ("Snow and Ice", "grit bin sponsorship", "clearing snow onto the road", "grit bins per street", "Highways"),
    ("Water Use", "hosepipe exemption", "using a hosepipe in a garden", "litres per day", "Environment"),
    ("Beekeeping", "apiary registration", "moving hives", "hives per garden", "Environment"),
    (
        "Fireworks",
        "fireworks display permit",
        "setting off fireworks",
        "kilograms of fireworks per display",
        "Licensing",
    ),
    ("Street Performance", "busking licence", "busking in the high street", "performers per pitch", "Licensing"),
    ("Garden Sheds", "outbuilding permit", "building a garden shed", "square metres of shed", "Planning"),
    (
        "Boundary Fences",
        "fence height consent",
        "erecting a front-garden fence",
        "fence height in centimetres",
        "Planning",
    ),
]
ABSENT_TOPICS = [
    ("drone flying permit", "flying a drone over the common"),
    ("hot air balloon licence", "launching a hot air balloon"),
    ("food truck permit", "parking a food truck on the promenade"),
    ("horse riding permit", "riding horses on the beach"),
    ("kite festival licence", "flying kites on the sports field"),
    ("scaffolding licence", "putting up scaffolding"),
    ("pavement cafe licence", "placing cafe tables on the pavement"),
    ("metal detecting permit", "metal detecting in the park"),
    ("skip hire permit", "leaving a skip on the road"),
    ("charity collection permit", "collecting for charity in the high street"),
    ("boat launch permit", "launching a boat from the town slipway"),
    ("sandwich board consent", "placing a sandwich board on the pavement"),
]
# Details no chapter gives about its real permit or topic: (train wording, test wording)
CHAPTER_GAPS = {
    "renewal": (["What is the renewal fee for a {permit}?"], ["How much is it to renew a {permit}?"]),
    "discount": (["What discount do pensioners get on a {permit}?"], ["How much do over-65s pay for a {permit}?"]),
    "form": (["Which form is used to apply for a {permit}?"], ["What is the name of the form for a {permit}?"]),
    "repeat": (["What is the fine for a second breach of the {topic} rules?"],
               ["How large is the penalty for a repeat {topic} offence?"]),
    "refund": (["How much of the {permit} fee is refunded if I cancel?"], ["What refund applies to a cancelled {permit}?"]),
}  # fmt: skip
FALSE_PREMISES = (["What year did the Council abolish the {permit}?"], ["When was the {permit} abolished?"])
# abstention rows per split: invented permits, missing details of real ones, false premises
ABSTENTION_MIX = {"train": (4, 5, 1), "test": (8, 10, 2)}

TEMPLATES = {
    "fee": (
        ["How much does a {permit} cost?", "What is the fee for a {permit}?"],
        ["What will the council charge me for a {permit}?", "What's the price of obtaining a {permit}?"],
    ),
    "validity": (
        ["How long is a {permit} valid?", "For how many months does a {permit} last?"],
        ["When does a {permit} expire after it is issued?", "What is the validity period of a {permit}?"],
    ),
    "fine": (
        ["What is the fine for breaking the {topic} rules?", "How much is the penalty under the {topic} chapter?"],
        ["What penalty applies to a breach of the {topic} chapter?", "How large is the fine for a {topic} offence?"],
    ),
    "start": (
        ["From what time is {activity} allowed?", "What time may {activity} start?"],
        ["What is the earliest time for {activity}?", "How early can {activity} begin?"],
    ),
    "end": (
        ["Until what time is {activity} allowed?", "When must {activity} stop?"],
        ["What is the latest time for {activity}?", "By what time must {activity} end?"],
    ),
    "limit": (
        ["What is the limit on {unit}?", "How many {unit} are allowed?"],
        ["What is the maximum number of {unit}?", "What cap does the code set on {unit}?"],
    ),
    "department": (
        ["Which office handles applications for a {permit}?", "Where do I apply for a {permit}?"],
        ["Which council department issues the {permit}?", "To which office should a {permit} application go?"],
    ),
}

# (train templates, test templates) per department: test requests use wording and structures no train row uses
ROUTING_REQUESTS = {
    "Planning": (
        [
            "I want to build an extension at {a}.",
            "Do I need consent for a new shop sign on {a}?",
            "My neighbour on {a} put up a fence that looks too tall.",
        ],
        [
            "Is permission needed before converting the loft of a house on {a}?",
            "A dormer window is going up next door on {a} without any notice being posted.",
        ],
    ),
    "Environment": (
        [
            "The bins on {a} were not collected.",
            "There is loud music every night on {a}.",
            "Someone is burning rubbish in a garden on {a}.",
        ],
        [
            "Rubbish has been dumped in the alley behind {a} for a week now.",
            "Who deals with smoke from a neighbour's chimney drifting over {a}?",
        ],
    ),
    "Licensing": (
        [
            "I would like to sell hot food from a pitch on {a}.",
            "We plan a street party on {a}.",
            "How do I become a taxi driver based near {a}?",
        ],
        [
            "Our band wants to put on a paid concert in a hall on {a}; who signs that off?",
            "A pub on {a} hopes to open its beer garden for a weekend festival.",
        ],
    ),
    "Highways": (
        [
            "There is a pothole outside {a}.",
            "The grit bin on {a} is empty.",
            "I need a parking permit for {a}.",
        ],
        [
            "Cars park half on the pavement along {a} every morning.",
            "Since Tuesday the street lights on {a} have been out.",
        ],
    ),
    "Parks": (
        [
            "The playground swings near {a} are broken.",
            "I want to rent an allotment close to {a}.",
            "Dogs are off the lead in the park by {a}.",
        ],
        [
            "Someone has smashed the benches on the green behind {a}.",
            "Could the overgrown hedges in the recreation ground near {a} be cut back?",
        ],
    ),
}
# house-style questions: (train templates, test templates)
STYLE_QUESTIONS = (
    ["Is {activity} allowed at {time}?"],
    ["Would {activity} at {time} break the {topic} rules?", "Am I within the rules if I am {activity} at {time}?"],
)
STREETS = [
    "Mill Lane",
    "Quay Street",
    "Tanner's Row",
    "Abbey Close",
    "Fernhill Road",
    "Market Hill",
    "Priory Walk",
    "Coldharbour Way",
    "St Brannoc's Court",
    "Weir Terrace",
    "Ropewalk",
    "Chandlers Yard",
]


def _hour(h: int, m: int = 0) -> str:
    return f"{h:02d}:{m:02d}"


def _chapter(rng: random.Random, number: int, topic: tuple) -> tuple[str, dict]:
    title, permit, activity, unit, dept = topic
    v = {
        "fee": f"£{rng.randrange(12, 480)}",
        "validity": f"{rng.choice([1, 2, 3, 4, 6, 9, 12, 18, 24, 36, 48, 60])} months",
        "fine": f"£{rng.randrange(50, 2500, 10)}",
        "start": _hour(rng.randrange(6, 11), rng.choice([0, 15, 30, 45])),
        "end": _hour(rng.randrange(17, 23), rng.choice([0, 15, 30, 45])),
        "limit": str(rng.randrange(2, 60)),
        "department": dept,
    }
    sec = f"{number}"
    para = rng.choice(
        [
            f"This chapter governs {activity} within the boundaries of the Town of Ostwick, including the parishes of "
            f"Lower Ostwick and Saltmarsh. It applies to residents, visitors and businesses alike.",
            f"The Council adopted this chapter to balance the interests of residents with those engaged in {activity}. "
            f"Nothing in it removes a duty imposed by national law.",
        ]
    )
    text = f"""# Chapter {number}: {title}

{para}

## {sec}.1 Definitions

In this chapter, "the Council" means Ostwick Town Council, "applicant" means a person applying for a {permit}, and
"working day" means any day other than a Sunday or a public holiday.

## {sec}.2 Permits

{sec}.2.1 No person shall engage in {activity} where this chapter requires a {permit} without holding one.

{sec}.2.2 A {permit} costs {v["fee"]} and is valid for {v["validity"]} from the date of issue.

{sec}.2.3 Applications are made to the {dept} office of the Council, which decides within ten working days.

## {sec}.3 Hours and limits

{sec}.3.1 {activity[0].upper() + activity[1:]} is permitted between {v["start"]} and {v["end"]} only.

{sec}.3.2 The limit on {unit} is {v["limit"]}, unless the {dept} office grants a written exemption.

## {sec}.4 Fees and penalties

{markdown_table(["Item", "Amount"], [[permit.capitalize(), v["fee"]], ["Fine for a breach of this chapter", v["fine"]]])}

{sec}.4.1 A person who breaches this chapter is liable to a fine of {v["fine"]}. The Council may waive a first
offence where the breach was remedied within 48 hours.
"""
    return text, v


def _facts(doc_id: str, topic: tuple, values: dict) -> list[Fact]:
    title, permit, activity, unit, _ = topic
    facts = []
    for kind, (train, test) in TEMPLATES.items():
        fill = {"permit": permit, "topic": title.lower(), "activity": activity, "unit": unit}
        facts.append(
            Fact(
                f"{doc_id}.{kind}",
                doc_id,
                values[kind],
                [t.format(**fill) for t in train],
                [t.format(**fill) for t in test],
                kind=kind,
            )
        )
    return facts


STYLE_INSTRUCTION = (
    "Answer in at most 25 words. Start with Allowed or Prohibited. "
    "End with the id of the source chapter in square brackets, for example [ch01-residential-parking]."
)
ROUTING_INSTRUCTION = "Route the resident's request to one council department. Reply with exactly one of: {labels}."


def build() -> dict[str, str]:
    """Every file of the corpus, keyed by path relative to the corpus folder."""
    rng = random.Random(SEED)
    files, facts, chapters = {}, [], []
    for number, topic in enumerate(TOPICS, start=1):
        doc_id = f"ch{number:02d}-{topic[0].lower().replace(' ', '-')}"
        text, values = _chapter(rng, number, topic)
        files[f"documents/{doc_id}.md"] = text
        facts += _facts(doc_id, topic, values)
        chapters.append((doc_id, topic, values))
    train, test = knowledge_rows(facts, rng, "ow", n_unseen=30, n_paraphrase=30)
    unseen = {r["id"].removeprefix("ow-unseen-") for r in test if r["kind"] == "unseen"}

    behaviour = _behaviour_rows(rng, chapters, unseen)
    abstention = _abstention_rows(rng, chapters)

    files["tasks/knowledge.jsonl"] = jsonl(train + test)
    files["tasks/behaviour.jsonl"] = jsonl(behaviour)
    files["tasks/abstention.jsonl"] = jsonl(abstention)
    return {path: fix_articles(text) for path, text in files.items()}


TIMES = [_hour(h, m) for h in range(5, 24) for m in (0, 15, 30, 45)]


def _behaviour_rows(rng: random.Random, chapters: list[tuple], unseen: set[str]) -> list[dict]:
    """Routing labels and house-style answers: labels and verdicts cycle so each split is balanced, and test
    inputs come from held-out templates; style rows never ask about an `unseen` fact."""
    behaviour, seen = [], set()
    labels = DEPARTMENTS
    for split, count in (("train", 40), ("test", 20)):
        made = 0
        while made < count:
            label = labels[made % len(labels)]
            text = rng.choice(for_split(ROUTING_REQUESTS[label], split)).format(a=rng.choice(STREETS))
            if text in seen:
                continue
            seen.add(text)
            made += 1
            behaviour.append(
                {
                    "id": f"ow-route-{split}-{made:03d}",
                    "family": "behaviour",
                    "split": split,
                    "kind": "routing_label",
                    "instruction": ROUTING_INSTRUCTION.format(labels=", ".join(labels)),
                    "input": text,
                    "labels": labels,
                    "label": label,
                }
            )
    style = {"max_words": 25, "first_word_in": ["Allowed", "Prohibited"], "cite_source": True}
    for split, count in (("train", 30), ("test", 15)):
        made = 0
        while made < count:
            doc_id, topic, values = rng.choice(chapters)
            if f"{doc_id}.start" in unseen or f"{doc_id}.end" in unseen:
                continue
            verdict = "Allowed" if made % 2 == 0 else "Prohibited"
            inside = [t for t in TIMES if values["start"] <= t <= values["end"]]
            time = rng.choice(inside if verdict == "Allowed" else [t for t in TIMES if t not in inside])
            template = rng.choice(for_split(STYLE_QUESTIONS, split))
            question = template.format(activity=topic[2], time=time, topic=topic[0].lower())
            if question in seen:
                continue
            seen.add(question)
            made += 1
            behaviour.append(
                {
                    "id": f"ow-style-{split}-{made:03d}",
                    "family": "behaviour",
                    "split": split,
                    "kind": "house_style",
                    "instruction": STYLE_INSTRUCTION,
                    "question": question,
                    "answers": [f"{verdict}: the hours are {values['start']} to {values['end']}. [{doc_id}]"],
                    "style": style,
                    "source_docs": [doc_id],
                }
            )
    return behaviour


def _abstention_rows(rng: random.Random, chapters: list[tuple]) -> list[dict]:
    """Permits the code does not have (asked in the knowledge questions' wording), details no chapter gives about
    a real permit, and false premises. No invented permit is asked in both splits."""
    absent = ABSENT_TOPICS[:]
    rng.shuffle(absent)
    gaps = [(doc_id, topic, pair) for doc_id, topic, _ in chapters for pair in CHAPTER_GAPS.values()]
    rng.shuffle(gaps)
    premises = [(doc_id, topic) for doc_id, topic, _ in chapters]
    rng.shuffle(premises)
    rows = []
    for split, (n_absent, n_gap, n_premise) in ABSTENTION_MIX.items():
        questions: list[tuple[str, str, list[str]]] = []
        for permit, activity in absent[:n_absent]:
            kind = rng.choice(["fee", "validity", "department", "start", "end"])
            template = rng.choice(for_split(TEMPLATES[kind], split))
            questions.append(("near_miss", template.format(permit=permit, activity=activity), []))
        for doc_id, topic, pair in gaps[:n_gap]:
            question = rng.choice(for_split(pair, split)).format(permit=topic[1], topic=topic[0].lower())
            questions.append(("missing_detail", question, [doc_id]))
        for doc_id, topic in premises[:n_premise]:
            question = for_split(FALSE_PREMISES, split)[0].format(permit=topic[1])
            questions.append(("false_premise", question, [doc_id]))
        del absent[:n_absent], gaps[:n_gap], premises[:n_premise]  # test never reuses what train asked
        rng.shuffle(questions)
        for i, (kind, question, docs) in enumerate(questions, start=1):
            row = {"id": f"ow-abstain-{split}-{i:03d}", "family": "abstention", "split": split, "kind": kind}
            rows.append(row | {"question": question} | ({"source_docs": docs} if docs else {}))
    return rows
