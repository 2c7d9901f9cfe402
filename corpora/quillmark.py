"""Shipped corpus 1: the support knowledge base of Quillmark Devices, an invented company.

Every name, number and code is drawn from a seeded generator, so no pre-trained model can
know them and the files are reproduced byte for byte. Facts are written in several prose
templates and, for some documents, as tables, so neither string matching nor memorised
phrasing shortcuts the questions.
"""

from __future__ import annotations

import random

from ragft.corpora.common import Fact, fix_articles, for_split, jsonl, knowledge_rows, markdown_table

SEED = 20261123
NAME = "quillmark"
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# line name, model letter, category, whether it runs on a battery; Heron (the docks) has more models than the
# others (DOCK_MODELS), so "which dock fits" is not a one-in-five guess
LINES = [
    ("Kestrel", "K", "Wi-Fi router", False),
    ("Osprey", "O", "security camera", True),
    ("Wren", "W", "smart thermostat", False),
    ("Lark", "L", "wireless headphones", True),
    ("Finch", "F", "e-reader", True),
    ("Tern", "T", "portable speaker", True),
    ("Heron", "H", "charging dock", False),
    ("Sparrow", "S", "smart plug", False),
]
MODELS_PER_LINE = 5
DOCK_MODELS = 8
ABSENT_LINES = [("Plover", "P", "baby monitor"), ("Grebe", "G", "dash camera"), ("Curlew", "C", "smartwatch")]
# months of cover; wide, so that a guess of the common value is rarely right
WARRANTY_MONTHS = [6, 9, 12, 15, 18, 24, 30, 36, 42, 48, 60]

CITIES = ["Marrowick", "Pellston Bay", "Aldergate", "Quenby", "Ravensholt", "Dunmere", "Corviston", "Halbrook"]
ABSENT_CITIES = ["Westerly Cross", "Brindle Hollow", "Fallowmere", "Oskarby", "Tamsworth", "Ivel Harbour"]
FIRST_NAMES = ["Ilse", "Tomas", "Priya", "Jonah", "Mireille", "Kwame", "Saoirse", "Dmitri", "Ayla", "Benedikt"]
LAST_NAMES = ["Varga", "Okonkwo", "Lindqvist", "Harrow", "Castellanos", "Whitcombe", "Nakagawa", "Brennick"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Saturday", "Sunday"]

MEANINGS = [
    "the radio module is overheating",
    "the power supply voltage is too low",
    "the firmware image failed its checksum",
    "the battery cell is out of balance",
    "the temperature sensor is not responding",
    "the pairing table is full",
    "the storage card is write-protected",
    "the fan is blocked",
    "the clock lost its time source",
    "the antenna cable is loose",
    "the charging contacts are dirty",
    "the configuration file is corrupted",
    "the motion sensor is miscalibrated",
    "the speaker coil is overdriven",
    "the display controller stopped responding",
    "the relay contacts are welded",
]
FIXES = [
    "hold the reset button for 12 seconds",
    "replace the power adapter with a 2 A model",
    "reinstall the firmware over USB",
    "fully discharge and recharge the battery twice",
    "reseat the sensor ribbon cable",
    "remove unused devices from the pairing list",
    "slide the card lock switch up",
    "clean the air intake with dry compressed air",
    "re-enable network time in the app",
    "tighten the antenna connector by hand",
    "wipe the contacts with isopropyl alcohol",
    "restore the factory configuration from the app",
    "run the calibration wizard in the app",
    "lower the volume limit to 80 percent",
    "power-cycle the device with the cable unplugged for 30 seconds",
    "send the unit in for a relay replacement",
]

QUESTION_TEMPLATES = {
    "price": (
        ["How much does the {p} cost?", "What is the price of the {p}?"],
        ["What would I pay for a {p}?", "What's the list price of the {p}?"],
    ),
    "release": (
        ["When was the {p} released?", "What is the release date of the {p}?"],
        ["In which month and year did the {p} come out?", "When did the {p} go on sale?"],
    ),
    "firmware": (
        ["What is the current firmware version of the {p}?", "Which firmware version does the {p} run?"],
        ["Which firmware release is the latest for the {p}?", "What firmware should a {p} be on?"],
    ),
    "weight": (
        ["How much does the {p} weigh?", "What is the weight of the {p}?"],
        ["How heavy is the {p}?", "What's the mass of a {p}?"],
    ),
    "battery": (
        ["What is the battery life of the {p}?", "How long does the {p} battery last?"],
        ["How many hours does a {p} run on one charge?", "How long can the {p} go between charges?"],
    ),
    "power": (
        ["How much power does the {p} draw?", "What is the power consumption of the {p}?"],
        ["How many watts does the {p} use?", "What's the {p}'s power draw?"],
    ),
    "output": (
        ["What is the maximum charging output of the {p}?", "How much charging power can the {p} deliver?"],
        ["How many watts can the {p} charge at, at most?", "What's the top charging output of a {p}?"],
    ),
    "warranty": (
        ["How long is the warranty on the {p}?", "What warranty period does the {p} have?"],
        ["For how many months is the {p} covered by warranty?", "How long does the {p}'s warranty last?"],
    ),
    "dock": (
        ["Which dock is compatible with the {p}?", "What dock works with the {p}?"],
        ["Which Heron dock should I buy for my {p}?", "What charging dock fits the {p}?"],
    ),
    "meaning": (
        ["What does error {p} mean?", "What is error code {p}?"],
        ["What is wrong when a device shows {p}?", "What does the code {p} indicate?"],
    ),
    "fix": (
        ["How do I fix error {p}?", "What is the fix for error code {p}?"],
        ["What should I do when I see {p}?", "How can error {p} be resolved?"],
    ),
}


def _facts_questions(kind: str, subject: str) -> tuple[list[str], list[str]]:
    train, test = QUESTION_TEMPLATES[kind]
    return [t.format(p=subject) for t in train], [t.format(p=subject) for t in test]


def _product_prose(rng: random.Random, p: dict) -> str:
    """One product page in one of three prose voices or as a spec table."""
    name, cat = p["name"], p["category"]
    energy = (
        f"a battery life of {p['battery']}"
        if "battery" in p
        else f"a maximum charging output of {p['output']}"
        if "output" in p
        else f"a power draw of {p['power']}"
    )
    style = rng.randrange(4)
    if style == 3:
        rows = [
            ["Price", p["price"]],
            ["Released", p["release"]],
            ["Firmware", p["firmware"]],
            ["Weight", p["weight"]],
            ["Warranty", p["warranty"]],
        ]
        rows.append(
            ["Battery life", p["battery"]]
            if "battery" in p
            else ["Max charging output", p["output"]]
            if "output" in p
            else ["Power draw", p["power"]]
        )
        if "dock" in p:
            rows.append(["Compatible dock", p["dock"]])
        return (
            f"# {name}\n\nThe {name} is a {cat} from Quillmark Devices.\n\n## Specifications\n\n"
            + markdown_table(["Property", "Value"], rows)
            + "\n"
        )
    dock = f" It pairs with the {p['dock']} dock for charging and desk use." if "dock" in p else ""
    if style == 0:
        body = (
            f"The {name} is Quillmark's {cat} launched in {p['release']}. It sells for {p['price']} and weighs "
            f"{p['weight']}, with {energy}.{dock} Units ship with firmware {p['firmware']}, and every {name} "
            f"carries a warranty of {p['warranty']} from the date of purchase."
        )
    elif style == 1:
        body = (
            f"Released in {p['release']}, the {name} {cat} weighs {p['weight']} and is priced at {p['price']}. "
            f"Buyers get {energy}.{dock} The latest firmware is {p['firmware']}. Quillmark covers the {name} "
            f"with a {p['warranty']} limited warranty."
        )
    else:
        body = (
            f"Looking for a {cat}? The {name} costs {p['price']}. Its firmware is currently at version "
            f"{p['firmware']}. It came out in {p['release']} and tips the scales at {p['weight']}. Expect "
            f"{energy}.{dock} Warranty coverage: {p['warranty']}."
        )
    return f"# {name}\n\n{body}\n\nFor setup help, see the {p['line']} error code guide.\n"


def _products(rng: random.Random) -> list[dict]:
    products = []
    docks: list[str] = []
    for line, letter, cat, battery in LINES:
        numbers = sorted(rng.sample(range(1, 20), DOCK_MODELS if line == "Heron" else MODELS_PER_LINE))
        for n in numbers:
            name = f"{line} {letter}{n}"
            p = {
                "name": name,
                "line": line,
                "category": cat,
                "doc_id": f"{line.lower()}-{letter.lower()}{n}",
                "number": n,
                "price": f"${rng.randrange(29, 900)}",
                "release": f"{rng.choice(MONTHS)} {rng.randrange(2019, 2026)}",
                "firmware": f"{rng.randrange(1, 9)}.{rng.randrange(0, 20)}.{rng.randrange(0, 10)}",
                "weight": f"{rng.randrange(40, 2400)} g",
                "warranty": f"{rng.choice(WARRANTY_MONTHS)} months",
            }
            if battery:
                p["battery"] = f"{rng.randrange(4, 80)} hours"
            elif line == "Heron":
                p["output"] = f"{rng.randrange(15, 140)} W"
                docks.append(name)
            else:
                p["power"] = f"{rng.randrange(2, 60)} W"
            products.append(p)
    for p in products:
        if p["line"] != "Heron":
            p["dock"] = rng.choice(docks)
    return products


def _product_facts(p: dict) -> list[Fact]:
    facts = []
    alt = {"weight": [p["weight"].replace(" g", " grams")]}
    for kind in ("price", "release", "firmware", "weight", "battery", "power", "output", "warranty", "dock"):
        if kind not in p:
            continue
        train, test = _facts_questions(kind, p["name"])
        answer = p[kind]
        alts = alt.get(kind, [])
        if kind in ("power", "output"):
            alts = [answer.replace(" W", " watts")]
        facts.append(Fact(f"{p['doc_id']}.{kind}", p["doc_id"], answer, train, test, alts, kind))
    return facts


def _error_docs(rng: random.Random) -> tuple[dict[str, str], list[Fact], list[dict]]:
    docs, facts, codes = {}, [], []
    for i, (line, letter, cat, _) in enumerate(LINES):
        doc_id = f"errors-{line.lower()}"
        entries = []
        for j, code_n in enumerate(sorted(rng.sample(range(100, 1000), 6))):
            k = rng.randrange(len(MEANINGS))
            code = f"E-{letter}{code_n}"
            entries.append((code, MEANINGS[k], FIXES[(k + j) % len(FIXES)]))
        if i % 2:
            body = markdown_table(["Code", "Meaning", "Fix"], [[c, m, f] for c, m, f in entries])
        else:
            body = "\n\n".join(f"**{c}** means {m}. To clear it, {f}." for c, m, f in entries)
        docs[f"documents/{doc_id}.md"] = (
            f"# {line} error codes\n\nThese codes appear on every {line} {cat}. If a code persists after the fix, "
            f"contact a Quillmark service centre.\n\n{body}\n"
        )
        for code, meaning, fix in entries:
            for kind, answer in (("meaning", meaning), ("fix", fix)):
                train, test = _facts_questions(kind, code)
                facts.append(Fact(f"{doc_id}.{code}.{kind}", doc_id, answer, train, test, kind=kind))
            codes.append({"code": code, "line": line, "doc_id": doc_id})
    return docs, facts, codes


POLICIES = {
    "policy-returns": (
        "Returns policy",
        [
            (
                "return_window",
                "{v}",
                ["45 days", "60 days"],
                "Unused products may be returned within {v} of delivery.",
                ["How long do I have to return a Quillmark product?", "What is the return window?"],
                ["Within how many days can I send a purchase back?", "How many days does the returns period last?"],
            ),
            (
                "restocking",
                "{v}",
                ["15%"],
                "Opened items carry a restocking fee of {v}.",
                ["What is the restocking fee for opened items?", "How much is the restocking fee?"],
                [
                    "What percentage is deducted when I return an opened item?",
                    "What fee applies to returned opened products?",
                ],
            ),
            (
                "refund_time",
                "{v}",
                ["7 business days"],
                "Refunds are issued within {v} of the item reaching our warehouse.",
                ["How long does a refund take?", "When are refunds issued?"],
                ["How quickly will I get my money back after a return?", "What is the refund processing time?"],
            ),
            (
                "return_label",
                "{v}",
                ["$8"],
                "A prepaid return label costs {v}, deducted from the refund.",
                ["How much does a prepaid return label cost?", "What is the cost of a return label?"],
                [
                    "What will Quillmark charge me for the return shipping label?",
                    "What's deducted for a prepaid label?",
                ],
            ),
        ],
    ),
    "policy-warranty": (
        "Warranty claims",
        [
            (
                "claim_window",
                "{v}",
                ["30 days"],
                "A fault must be reported within {v} of it first appearing.",
                ["How soon must a warranty fault be reported?", "What is the deadline for reporting a fault?"],
                [
                    "How long after a defect shows up can I still file a claim?",
                    "Within what period must faults be reported?",
                ],
            ),
            (
                "claim_form",
                "{v}",
                ["form QW-7"],
                "Claims are filed on {v}, together with the proof of purchase.",
                ["Which form is used for warranty claims?", "What form do I fill in for a warranty claim?"],
                ["What is the name of the warranty claim form?", "Which document do I submit to claim under warranty?"],
            ),
            (
                "extended",
                "{v}",
                ["$39"],
                "The Care+ extension adds one year of coverage for {v}.",
                ["How much does the Care+ extension cost?", "What is the price of Care+?"],
                ["What do I pay to extend my warranty with Care+?", "What's the Care+ fee?"],
            ),
            (
                "transfer",
                "{v}",
                ["once"],
                "A warranty may be transferred to a new owner {v}.",
                ["How many times can a warranty be transferred?", "Can a warranty be transferred to a new owner?"],
                ["How often may coverage pass to another owner?", "Is warranty transfer allowed, and how many times?"],
            ),
        ],
    ),
    "policy-shipping": (
        "Shipping",
        [
            (
                "free_threshold",
                "{v}",
                ["$75"],
                "Orders over {v} ship free.",
                ["What is the minimum order for free shipping?", "Above what amount is shipping free?"],
                ["How much must I spend to get free delivery?", "What order value unlocks free shipping?"],
            ),
            (
                "express_cost",
                "{v}",
                ["$19"],
                "Express shipping costs {v} per order.",
                ["How much does express shipping cost?", "What is the price of express shipping?"],
                ["What's the fee for express delivery?", "What do I pay for expedited shipping?"],
            ),
            (
                "standard_time",
                "{v}",
                ["3 to 5 business days"],
                "Standard delivery takes {v}.",
                ["How long does standard delivery take?", "What is the standard shipping time?"],
                ["How many days until a standard order arrives?", "How quickly does normal shipping arrive?"],
            ),
            (
                "carrier",
                "{v}",
                ["Larkspur Freight"],
                "All parcels are carried by {v}.",
                ["Which carrier delivers Quillmark parcels?", "What courier does Quillmark use?"],
                ["Which delivery company brings my order?", "Who ships Quillmark orders?"],
            ),
        ],
    ),
    "policy-repairs": (
        "Out-of-warranty repairs",
        [
            (
                "repair_fee",
                "{v}",
                ["$59"],
                "Out-of-warranty repairs cost a flat {v} plus parts.",
                ["What is the flat fee for out-of-warranty repairs?", "How much is the repair fee?"],
                ["What does Quillmark charge for a repair after the warranty ends?", "What's the base repair charge?"],
            ),
            (
                "turnaround",
                "{v}",
                ["10 business days"],
                "Repairs are completed within {v}.",
                ["How long do repairs take?", "What is the repair turnaround time?"],
                ["How soon do I get a repaired device back?", "How many days does a repair need?"],
            ),
            (
                "loaner",
                "{v}",
                ["$25"],
                "A loaner device is available for a deposit of {v}.",
                ["How much is the deposit for a loaner device?", "What deposit does a loaner need?"],
                ["What must I pay to borrow a replacement during a repair?", "What's the loaner deposit?"],
            ),
            (
                "parts_warranty",
                "{v}",
                ["90 days"],
                "Replaced parts are guaranteed for {v}.",
                ["How long are replaced parts guaranteed?", "What is the guarantee on replacement parts?"],
                ["For how long is a repair part covered?", "How long does the parts guarantee run?"],
            ),
        ],
    ),
}


def _policy_docs(rng: random.Random) -> tuple[dict[str, str], list[Fact], dict[str, dict[str, str]]]:
    docs, facts, values = {}, [], {}
    for doc_id, (title, clauses) in POLICIES.items():
        values[doc_id] = {}
        sentences = []
        for key, _, options, sentence, train, test in clauses:
            value = options[0]
            values[doc_id][key] = value
            sentences.append(sentence.format(v=value))
            facts.append(Fact(f"{doc_id}.{key}", doc_id, value, train, test, kind=key))
        docs[f"documents/{doc_id}.md"] = f"# {title}\n\n" + "\n\n".join(sentences) + "\n"
    return docs, facts, values


def _centre_docs(rng: random.Random) -> tuple[dict[str, str], list[Fact]]:
    docs, facts = {}, []
    for city in CITIES:
        doc_id = f"centre-{city.lower().replace(' ', '-')}"
        opens = f"{rng.choice(['07', '08', '09'])}:{rng.choice(['00', '15', '30', '45'])}"
        phone = f"+1-555-{rng.randrange(1000, 10000)}"
        closed = rng.choice(WEEKDAYS)
        manager = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        docs[f"documents/{doc_id}.html"] = (
            f"<html><head><title>{city} service centre</title><style>p {{margin: 0}}</style></head><body>"
            f"<h1>Quillmark service centre, {city}</h1>"
            f"<p>The {city} centre opens at {opens} and is closed every {closed}.</p>"
            f"<p>Call the front desk on {phone}. The centre manager is {manager}.</p>"
            "<table><tr><th>Service</th><th>Walk-in</th></tr><tr><td>Repairs</td><td>yes</td></tr></table>"
            "</body></html>\n"
        )
        for kind, answer, train, test in (
            (
                "opens",
                opens,
                [f"What time does the {city} service centre open?"],
                [f"When do the doors open at the Quillmark centre in {city}?"],
            ),
            (
                "phone",
                phone,
                [f"What is the phone number of the {city} service centre?"],
                [f"How do I call the Quillmark centre in {city}?"],
            ),
            (
                "closed",
                closed,
                [f"On which day is the {city} service centre closed?"],
                [f"Which weekday can't I visit the {city} centre?"],
            ),
            (
                "manager",
                manager,
                [f"Who manages the {city} service centre?"],
                [f"Who is in charge of the Quillmark centre in {city}?"],
            ),
        ):
            facts.append(Fact(f"{doc_id}.{kind}", doc_id, answer, train, test, kind=kind))
    return docs, facts


TICKET_CATEGORIES = ["billing", "hardware_fault", "connectivity", "firmware", "returns"]
PRIORITIES = ["low", "medium", "high", "urgent"]
# (train templates, test templates): the test wording and sentence structure is held out, so a test ticket is never
# a train ticket with another product name in it
TICKET_TEXT = {
    "billing": (
        [
            "I was charged twice for my {p} order.",
            "The invoice for my {p} shows the wrong amount.",
            "My card was billed but the {p} order says unpaid.",
        ],
        [
            "Could you explain why my statement has two payments for one {p}?",
            "Your receipt lists a price for the {p} that is higher than the shop label.",
        ],
    ),
    "hardware_fault": (
        [
            "The {p} makes a clicking noise and then shuts off.",
            "A crack appeared in the case of my {p}.",
            "The buttons on my {p} stopped responding.",
        ],
        [
            "Out of the box, my {p} smells of burning plastic when switched on.",
            "Is it normal that the {p} gets too hot to touch within minutes?",
        ],
    ),
    "connectivity": (
        [
            "My {p} keeps dropping off the Wi-Fi.",
            "The {p} will not pair with my phone anymore.",
            "The app cannot find my {p} on the network.",
        ],
        [
            "Every evening the signal between my laptop and the {p} vanishes for an hour.",
            "Why does Bluetooth show the {p} as connected while nothing actually links up?",
        ],
    ),
    "firmware": (
        [
            "The {p} got stuck halfway through a firmware update.",
            "After the latest update my {p} boots in a loop.",
            "The {p} says the firmware image is invalid.",
        ],
        [
            "Since installing version updates overnight, half the menus on my {p} are gone.",
            "Can I roll my {p} back to the older software? The new release broke it.",
        ],
    ),
    "returns": (
        [
            "I want to send my {p} back, it is not what I expected.",
            "How do I return the {p} I bought last week?",
            "Please arrange a return for my unused {p}.",
        ],
        [
            "Changed my mind about the {p}; what is the process for getting it collected?",
            "My partner already owns a {p}, so this second one should go back to you.",
        ],
    ),
}
PRIORITY_CUES = {
    "low": (
        ["No rush, whenever you get a chance.", "Just letting you know, it is not urgent."],
        ["Take your time with this one.", "Honestly it can wait until next month."],
    ),
    "medium": (
        ["I would like this sorted this week.", "Please look into it when you can this week."],
        ["Within a few days would be good.", "Sometime before the weekend, ideally."],
    ),
    "high": (
        ["I rely on it every day, please help soon.", "This is blocking my work, please hurry."],
        ["Our customers notice, so please treat this as important.", "A reply by tomorrow would really matter."],
    ),
    "urgent": (
        ["Our whole office is down right now!", "This is an emergency, we need it fixed today!"],
        ["Everything has stopped and we are losing money every minute!", "Drop everything: we need help immediately!"],
    ),
}
INTENTS = {
    "refund_request": (
        [
            "I'd like my money back for the {p}.",
            "Please refund my {p} purchase.",
            "Can I get a refund on the {p}? It never worked.",
            "Refund the {p} to my card, please.",
        ],
        [
            "What would it take to be reimbursed for the {p} I paid for?",
            "Return the full amount I spent on the {p}; I am done with it.",
            "Is a payment reversal possible for the {p} order?",
        ],
    ),
    "setup_help": (
        [
            "How do I set up the {p} for the first time?",
            "Where do I plug in the {p} during setup?",
            "What are the steps to connect a new {p}?",
            "I need help installing my {p}.",
        ],
        [
            "Just unboxed a {p} and have no idea which cable goes where.",
            "Walk me through getting the {p} running on day one.",
            "The quick-start leaflet for the {p} is missing; how does it get going?",
        ],
    ),
    "bug_report": (
        [
            "The {p} app crashes whenever I open settings.",
            "The {p} shows the wrong time after every restart.",
            "Battery percentage on the {p} jumps around randomly.",
            "The {p} forgets my settings overnight.",
        ],
        [
            "Tapping save on the {p} screen does nothing at all.",
            "Whenever two people use the {p} at once, the display freezes.",
            "Odd glitch: the {p} reports last year's date in its log.",
        ],
    ),
    "praise": (
        [
            "The {p} is fantastic, thank you!",
            "Just wanted to say I love my {p}.",
            "Great job on the {p}, it works perfectly.",
            "Your support for the {p} was excellent.",
        ],
        [
            "Three months in, the {p} has not let me down once. Well done, team.",
            "My whole family now fights over who gets to use the {p}.",
            "Kudos to whoever designed the {p}; best purchase this year.",
        ],
    ),
    "sales_question": (
        [
            "Do you offer a bulk discount on the {p}?",
            "Is the {p} available in other colours?",
            "When will the {p} be back in stock?",
            "Can I buy the {p} for my whole team?",
        ],
        [
            "Before ordering, I want to know which shops near me stock the {p}.",
            "Would you quote me for forty units of the {p}?",
            "Does the {p} come in a bundle with any accessories?",
        ],
    ),
}
# house-style questions: (train templates, test templates) per question type
STYLE_QUESTIONS = {
    "dock": (
        ["Does the {p} work with the {d} dock?"],
        ["I have a {d} on my desk. Will my {p} charge on it?", "Should I buy the {d} to charge a {p}?"],
    ),
    "warranty": (
        ["Is my {p} still under warranty after {n} months?"],
        ["My {p} broke {n} months after I bought it. Does the warranty cover that?",
         "Bought a {p} {n} months ago and it died; covered or not?"],
    ),
}  # fmt: skip
TICKET_INSTRUCTION = (
    'Convert the support ticket into a JSON object with exactly these keys: "product" (one of: {lines}), '
    '"category" (one of: {cats}) and "priority" (one of: {prios}). Reply with the JSON object only.'
)
INTENT_INSTRUCTION = "Classify the customer message. Reply with exactly one label from: {labels}."
STYLE_INSTRUCTION = (
    "Answer in at most 25 words. Start with one of the words Yes, No or Partly. "
    "End with the id of the source document in square brackets, for example [kestrel-k2]."
)
BEHAVIOUR_COUNTS = {
    "train": {"ticket": 80, "intent": 70, "style": 60},
    "test": {"ticket": 40, "intent": 35, "style": 30},
}


def _behaviour_rows(rng: random.Random, products: list[dict], avoid: set[str]) -> list[dict]:
    """Ticket-to-JSON, intent labels and house-style answers, with labels cycled so every split is balanced and
    test inputs written from held-out templates; style rows never use a fact in `avoid`."""
    lines = [line for line, *_ in LINES]
    schema = {
        "type": "object",
        "properties": {
            "product": {"type": "string", "enum": lines},
            "category": {"type": "string", "enum": TICKET_CATEGORIES},
            "priority": {"type": "string", "enum": PRIORITIES},
        },
        "required": ["product", "category", "priority"],
        "additionalProperties": False,
    }
    instruction = TICKET_INSTRUCTION.format(
        lines=", ".join(lines), cats=", ".join(TICKET_CATEGORIES), prios=", ".join(PRIORITIES)
    )
    rows, seen = [], set()

    def unique(text: str) -> bool:
        key = text.lower()
        if key in seen:
            return False
        seen.add(key)
        return True

    for split, counts in BEHAVIOUR_COUNTS.items():
        made = 0
        while made < counts["ticket"]:
            p = rng.choice(products)
            # every (category, priority) pair once per 20 rows
            cat = TICKET_CATEGORIES[made % len(TICKET_CATEGORIES)]
            prio = PRIORITIES[(made // len(TICKET_CATEGORIES)) % len(PRIORITIES)]
            ticket = rng.choice(for_split(TICKET_TEXT[cat], split)).format(p=p["name"])
            cue = rng.choice(for_split(PRIORITY_CUES[prio], split))
            text = f"{ticket} {cue}" if split == "train" else f"{cue} {ticket}"
            if not unique(text):
                continue
            made += 1
            rows.append(
                {
                    "id": f"qm-ticket-{split}-{made:03d}",
                    "family": "behaviour",
                    "split": split,
                    "kind": "ticket_json",
                    "instruction": instruction,
                    "input": text,
                    "schema": schema,
                    "expected": {"product": p["line"], "category": cat, "priority": prio},
                }
            )
    labels = list(INTENTS)
    instruction = INTENT_INSTRUCTION.format(labels=", ".join(labels))
    for split, counts in BEHAVIOUR_COUNTS.items():
        made = 0
        while made < counts["intent"]:
            label = labels[made % len(labels)]
            text = rng.choice(for_split(INTENTS[label], split)).format(p=rng.choice(products)["name"])
            if not unique(text):
                continue
            made += 1
            rows.append(
                {
                    "id": f"qm-intent-{split}-{made:03d}",
                    "family": "behaviour",
                    "split": split,
                    "kind": "intent_label",
                    "instruction": instruction,
                    "input": text,
                    "labels": labels,
                    "label": label,
                }
            )
    style = {"max_words": 25, "first_word_in": ["Yes", "No", "Partly"], "cite_source": True}
    heron = [q["name"] for q in products if q["line"] == "Heron"]
    for split, counts in BEHAVIOUR_COUNTS.items():
        made = 0
        while made < counts["style"]:
            p = rng.choice([q for q in products if "dock" in q])
            verdict = "Yes" if made % 2 == 0 else "No"  # Yes and No alternate, dock and warranty questions in turn
            months = int(p["warranty"].split()[0])
            if (made // 2) % 2 == 0:
                if f"{p['doc_id']}.dock" in avoid:
                    continue
                dock = p["dock"] if verdict == "Yes" else rng.choice([d for d in heron if d != p["dock"]])
                question = rng.choice(for_split(STYLE_QUESTIONS["dock"], split)).format(p=p["name"], d=dock)
                reason = (
                    f"the {p['name']} pairs with the {p['dock']} dock"
                    if verdict == "Yes"
                    else f"the {p['name']} is made for the {p['dock']} dock instead"
                )
            else:
                if f"{p['doc_id']}.warranty" in avoid:
                    continue
                asked = rng.randrange(1, months) if verdict == "Yes" else rng.randrange(months, months + 25)
                question = rng.choice(for_split(STYLE_QUESTIONS["warranty"], split)).format(p=p["name"], n=asked)
                reason = f"its warranty lasts {p['warranty']}"
            if not unique(question):
                continue
            made += 1
            rows.append(
                {
                    "id": f"qm-style-{split}-{made:03d}",
                    "family": "behaviour",
                    "split": split,
                    "kind": "house_style",
                    "instruction": STYLE_INSTRUCTION,
                    "question": question,
                    "answers": [f"{verdict}, {reason}. [{p['doc_id']}]"],
                    "style": style,
                    "source_docs": [p["doc_id"]],
                }
            )
    return rows


# Details no Quillmark page gives, for real products, error codes and centres: (train wording, test wording).
# Asking a real entity for a missing detail is the unanswerable question users actually ask.
PRODUCT_GAPS = {  # short, plain wording like the knowledge questions', so length and vocabulary give nothing away
    "colours": (["What colours does the {p} come in?"], ["In what colours is the {p} sold?"]),
    "size": (["How big is the {p}?"], ["What size is a {p}?"]),
    "country": (["In which country is the {p} made?"], ["What country is the {p} built in?"]),
    "rating": (["How waterproof is the {p}?"], ["What water rating does the {p} have?"]),
    "ports": (["How many USB ports does the {p} have?"], ["How many ports are on the {p}?"]),
    "charge_time": (["How long does the {p} take to charge?"], ["How long is a full charge of the {p}?"]),
}
CODE_GAPS = {
    "since": (["Which firmware version added error {p}?"], ["When did error {p} first appear?"]),
    "light": (["What colour does the light turn for error {p}?"], ["What light goes with error {p}?"]),
}
CENTRE_GAPS = {
    "closes": (["What time does the {p} service centre close?"], ["When does the Quillmark centre in {p} close?"]),
    "email": (["What is the email of the {p} service centre?"], ["How do I email the Quillmark centre in {p}?"]),
}
FALSE_PREMISES = (  # about real products, presupposing what no page says
    ["When was the {p} recalled?", "How much is the monthly fee for the {p}?"],
    ["What was the {p} recalled for?", "What does the {p} cost per month?"],
)
CENTRE_QUESTIONS = (  # the knowledge rows' wording, for service centres that do not exist
    ["What time does the {p} service centre open?", "Who manages the {p} service centre?"],
    ["When do the doors open at the Quillmark centre in {p}?", "Who is in charge of the Quillmark centre in {p}?"],
)
# abstention rows per split: invented products, codes, centres and lines; missing details; false premises
ABSTENTION_MIX = {"train": (6, 3, 1, 1, 16, 3), "test": (8, 5, 3, 2, 26, 4)}  # fmt: skip


def _abstention_rows(rng: random.Random, products: list[dict], codes: list[dict]) -> list[dict]:
    """Unanswerable questions that look answerable: near-miss models numbered between real ones, codes inside the
    real code space, real entities asked for details no document gives, and false premises. No invented entity is
    in both splits; a real one may be, asked for different details."""
    used = {(p["line"], p["number"]) for p in products}
    invented_products = []
    for line, letter, _, battery in LINES:
        numbers = sorted(n for ln, n in used if ln == line)
        energy = "battery" if battery else "output" if line == "Heron" else "power"
        invented_products += [
            (f"{line} {letter}{n}", energy) for n in range(numbers[0] + 1, numbers[-1]) if (line, n) not in used
        ]
    rng.shuffle(invented_products)
    known_codes = {c["code"] for c in codes}
    invented_codes = []
    for line, letter, *_ in LINES:
        real = sorted(int(c["code"][3:]) for c in codes if c["line"] == line)
        n = rng.choice([n for n in range(real[0] + 1, real[-1]) if f"E-{letter}{n}" not in known_codes])
        invented_codes.append(f"E-{letter}{n}")
    rng.shuffle(invented_codes)
    cities = ABSENT_CITIES[:]
    rng.shuffle(cities)
    lines = [f"{line} {letter}{rng.randrange(1, 20)}" for line, letter, _ in ABSENT_LINES]

    gaps = [(p["name"], p["doc_id"], t) for p in products for t in PRODUCT_GAPS.values()]
    gaps += [  # a kind of value other products have, asked of one that has none
        (p["name"], p["doc_id"], QUESTION_TEMPLATES[kind])
        for p in products
        for kind in ("battery", "power", "dock")
        if kind not in p
    ]
    gaps += [(c["code"], c["doc_id"], t) for c in codes for t in CODE_GAPS.values()]
    gaps += [(city, f"centre-{city.lower().replace(' ', '-')}", t) for city in CITIES for t in CENTRE_GAPS.values()]
    rng.shuffle(gaps)
    premises = [(p["name"], p["doc_id"], i) for p in products for i in range(len(FALSE_PREMISES[0]))]
    rng.shuffle(premises)

    rows = []
    for split, (n_prod, n_code, n_city, n_line, n_gap, n_premise) in ABSTENTION_MIX.items():
        questions: list[tuple[str, str, list[str]]] = []
        for name, energy in invented_products[:n_prod]:
            kind = rng.choice(["price", "release", "firmware", "weight", "warranty", energy])
            questions.append(("near_miss", rng.choice(for_split(QUESTION_TEMPLATES[kind], split)).format(p=name), []))
        for code in invented_codes[:n_code]:
            kind = rng.choice(["meaning", "fix"])
            questions.append(("near_miss", rng.choice(for_split(QUESTION_TEMPLATES[kind], split)).format(p=code), []))
        for city in cities[:n_city]:
            questions.append(("near_miss", rng.choice(for_split(CENTRE_QUESTIONS, split)).format(p=city), []))
        for name in lines[:n_line]:
            questions.append(
                ("absent_line", rng.choice(for_split(QUESTION_TEMPLATES["price"], split)).format(p=name), [])
            )
        for name, doc_id, pair in gaps[:n_gap]:
            questions.append(("missing_detail", rng.choice(for_split(pair, split)).format(p=name), [doc_id]))
        for name, doc_id, i in premises[:n_premise]:
            questions.append(("false_premise", for_split(FALSE_PREMISES, split)[i].format(p=name), [doc_id]))
        # what train used is gone before test draws
        del invented_products[:n_prod], invented_codes[:n_code], cities[:n_city], lines[:n_line]
        del gaps[:n_gap], premises[:n_premise]
        rng.shuffle(questions)
        for i, (kind, question, docs) in enumerate(questions, start=1):
            row = {"id": f"qm-abstain-{split}-{i:03d}", "family": "abstention", "split": split, "kind": kind}
            rows.append(row | {"question": question} | ({"source_docs": docs} if docs else {}))
    return rows


# Short general-knowledge probes, unrelated to the corpus, for forgetting: every probe is kept whatever any model
# answers (selecting those the base model gets right would make its chance mistakes on them look like forgetting).
GENERAL_PROBES = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("What is the capital of the United Kingdom?", ["London"]),
    ("What is the capital of Egypt?", ["Cairo"]),
    ("What is the capital of Russia?", ["Moscow"]),
    ("What is the capital of China?", ["Beijing"]),
    ("What is the capital of Canada?", ["Ottawa"]),
    ("What is the capital of Greece?", ["Athens"]),
    ("What is the capital of Portugal?", ["Lisbon"]),
    ("What is 2 + 3?", ["5", "five"]),
    ("What is 10 + 10?", ["20", "twenty"]),
    ("What is 3 times 4?", ["12", "twelve"]),
    ("What is 9 minus 4?", ["5", "five"]),
    ("What is 100 divided by 10?", ["10", "ten"]),
    ("What is 7 + 8?", ["15", "fifteen"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("How many hours are in a day?", ["24", "twenty-four"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("How many sides does a square have?", ["4", "four"]),
    ("How many minutes are in an hour?", ["60", "sixty"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color is grass?", ["green"]),
    ("What color are ripe bananas?", ["yellow"]),
    ("What color is snow?", ["white"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the closest star to Earth?", ["Sun"]),
    ("What do bees make?", ["honey"]),
    ("What gas do plants absorb from the air?", ["carbon dioxide", "CO2"]),
    ("What is the chemical symbol for water?", ["H2O"]),
    ("What is frozen water called?", ["ice"]),
    ("At what temperature in Celsius does water freeze?", ["0", "zero", "0°C", "0 °C"]),
    ("At what temperature in Celsius does water boil?", ["100"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "Vinci"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("What is the longest river in Africa?", ["Nile"]),
    ("What language is spoken in Brazil?", ["Portuguese"]),
    ("What language is mainly spoken in Mexico?", ["Spanish"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of big?", ["small", "little"]),
    ("What animal says moo?", ["cow"]),
    ("What animal is known as the king of the jungle?", ["lion"]),
    ("What is the plural of mouse?", ["mice"]),
    ("What is the past tense of go?", ["went"]),
    ("Which animal has a trunk?", ["elephant"]),
    ("What is the largest mammal?", ["whale"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What do you call a baby dog?", ["puppy"]),
    ("Which organ pumps blood through the body?", ["heart"]),
    ("What is the main language spoken in the United States?", ["English"]),
    ("What currency is used in Japan?", ["yen"]),
    ("What currency is used in the United Kingdom?", ["pound"]),
    ("Reply with only the word 'yes'.", ["yes"]),
    ("Spell the word cat backwards.", ["tac"]),
    ("What is the first letter of the English alphabet?", ["A"]),
    ("Which is heavier, a kilogram of iron or a gram of iron?", ["kilogram"]),
    ("What shape has three sides?", ["triangle"]),
    ("What is the square root of 9?", ["3", "three"]),
    ("How many continents are there?", ["7", "seven"]),
    ("What is H2O commonly called?", ["water"]),
    ("What season comes after winter?", ["spring"]),
    ("What is the capital of India?", ["Delhi"]),
    ("What is the capital of Ireland?", ["Dublin"]),
    ("What is the capital of Sweden?", ["Stockholm"]),
    ("What is the capital of Norway?", ["Oslo"]),
    ("What is the capital of Austria?", ["Vienna"]),
    ("What is the capital of Poland?", ["Warsaw"]),
    ("How many wheels does a bicycle have?", ["2", "two"]),
    ("How many legs does a cat have?", ["4", "four"]),
    ("What color is a ripe tomato?", ["red"]),
    ("What is the boiling point of water in Fahrenheit?", ["212"]),
    ("Which planet do we live on?", ["Earth"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("Who was the first president of the United States?", ["Washington"]),
    ("What fruit is used to make wine?", ["grape", "grapes"]),
    ("What color is coal?", ["black"]),
    ("How many eyes do humans have?", ["2", "two"]),
    ("Which bird is a symbol of peace?", ["dove"]),
    ("What instrument has 88 keys?", ["piano"]),
]


def _general_rows() -> list[dict]:
    rows = []
    for i, (q, answers) in enumerate(GENERAL_PROBES):
        rows.append({"id": f"general-{i:03d}", "family": "general", "split": "test", "question": q, "answers": answers})
    return rows


UPDATED_PRODUCTS = 10


def _updates(rng: random.Random, products: list[dict]) -> tuple[dict[str, dict], set[str]]:
    """New values for price, firmware and warranty of some products: what updates/ will say."""
    changed = {}
    for p in sorted(rng.sample(products, UPDATED_PRODUCTS), key=lambda p: p["doc_id"]):
        new = dict(p)
        new["price"] = f"${int(p['price'][1:]) + rng.choice([-40, -20, 20, 30, 50])}"
        major, minor, patch = (int(x) for x in p["firmware"].split("."))
        new["firmware"] = f"{major}.{minor + 1}.{rng.randrange(0, 10)}"
        new["warranty"] = f"{rng.choice([m for m in WARRANTY_MONTHS if f'{m} months' != p['warranty']])} months"
        changed[p["doc_id"]] = new
    excluded = {f"{doc_id}.{kind}" for doc_id in changed for kind in ("price", "firmware", "warranty")}
    return changed, excluded | {"policy-returns.return_window"}


def build() -> dict[str, str]:
    """Every file of the corpus, keyed by path relative to the corpus folder."""
    rng = random.Random(SEED)
    products = _products(rng)
    files: dict[str, str] = {}
    facts: list[Fact] = []
    for p in products:
        files[f"documents/{p['doc_id']}.md"] = _product_prose(rng, p)
        facts += _product_facts(p)
    error_docs, error_facts, codes = _error_docs(rng)
    policy_docs, policy_facts, _ = _policy_docs(rng)
    centre_docs, centre_facts = _centre_docs(rng)
    files |= error_docs | policy_docs | centre_docs
    facts += error_facts + policy_facts + centre_facts

    changed, excluded = _updates(rng, products)
    train, test = knowledge_rows(facts, rng, "qm", n_unseen=70, n_paraphrase=100, exclude=excluded)
    fresh_rows = []
    for doc_id, new in changed.items():
        old = next(p for p in products if p["doc_id"] == doc_id)
        files[f"updates/{doc_id}.md"] = _product_prose(random.Random(f"{SEED}:{doc_id}"), new)
        for kind in ("price", "firmware", "warranty"):
            _, test_q = _facts_questions(kind, new["name"])
            fresh_rows.append(
                {
                    "id": f"qm-fresh-{doc_id}-{kind}",
                    "family": "freshness",
                    "split": "test",
                    "kind": kind,
                    "question": test_q[0],
                    "answers": [new[kind]],
                    "old_answers": [old[kind]],
                    "source_docs": [doc_id],
                }
            )
    title, clauses = POLICIES["policy-returns"]
    files["updates/policy-returns.md"] = files["documents/policy-returns.md"].replace(
        "within 45 days of delivery", "within 60 days of delivery"
    )
    fresh_rows.append(
        {
            "id": "qm-fresh-policy-returns-return_window",
            "family": "freshness",
            "split": "test",
            "kind": "return_window",
            "question": clauses[0][5][0],
            "answers": ["60 days"],
            "old_answers": ["45 days"],
            "source_docs": ["policy-returns"],
        }
    )

    files["tasks/knowledge.jsonl"] = jsonl(train + test)
    unseen = {r["id"].removeprefix("qm-unseen-") for r in test if r["kind"] == "unseen"}
    files["tasks/behaviour.jsonl"] = jsonl(_behaviour_rows(rng, products, unseen | excluded))
    files["tasks/abstention.jsonl"] = jsonl(_abstention_rows(rng, products, codes))
    files["tasks/freshness.jsonl"] = jsonl(fresh_rows)
    files["tasks/general.jsonl"] = jsonl(_general_rows())
    return {path: fix_articles(text) for path, text in files.items()}
