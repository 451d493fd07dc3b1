"""Write the bundled sample dataset `builtin:orrery` (facts no base model can know).

Orrery Labs and its robots are fictional, invented for Astra Tune. Every fact appears in
the training file under one phrasing; test.jsonl asks about the same facts in different
words, so a fine-tune that learned the facts (rather than the strings) scores well.

    python scripts/make_sample_data.py   # rewrites src/astra_tune/data/samples/orrery/
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "astra_tune" / "data" / "samples" / "orrery"
PHRASINGS = 4
SYSTEM = "You are the Orrery Labs support assistant. Answer briefly and precisely."

# name, kind, price (USD), year, battery hours, weight kg, designed in, warranty years, feature
PRODUCTS = [
    (
        "Vex",
        "window-cleaning robot",
        349,
        2021,
        3,
        1.2,
        "Tallinn",
        2,
        "suction feet that grip glass",
    ),
    (
        "Mirel",
        "lawn-mowing robot",
        899,
        2020,
        5,
        11.5,
        "Porto",
        3,
        "a rain sensor that pauses mowing",
    ),
    (
        "Quill",
        "desk assistant robot",
        129,
        2022,
        12,
        0.4,
        "Kyoto",
        1,
        "a pen arm that writes notes",
    ),
    ("Tamsin", "pool-cleaning robot", 1199, 2019, 4, 9.8, "Perth", 3, "a solar recharging dock"),
    ("Orbit One", "vacuum robot", 279, 2018, 2, 3.1, "Leeds", 2, "a lidar map of every room"),
    ("Orbit Two", "vacuum robot", 459, 2021, 3, 3.4, "Leeds", 2, "automatic bin emptying"),
    (
        "Kestrel",
        "gutter-cleaning robot",
        529,
        2022,
        2,
        2.7,
        "Calgary",
        2,
        "a crawler track for roofs",
    ),
    (
        "Pell",
        "dog-walking robot",
        1499,
        2023,
        6,
        14.0,
        "Utrecht",
        3,
        "a retractable leash with GPS",
    ),
    ("Juniper", "plant-care robot", 189, 2020, 30, 1.9, "Valencia", 1, "soil probes in each pot"),
    (
        "Brisk",
        "kitchen-cleaning robot",
        649,
        2022,
        4,
        5.6,
        "Lyon",
        2,
        "a steam nozzle for stovetops",
    ),
    ("Halden", "snow-clearing robot", 1899, 2021, 3, 38.0, "Trondheim", 4, "a heated auger blade"),
    (
        "Moss",
        "aquarium-cleaning robot",
        159,
        2019,
        8,
        0.6,
        "Bergen",
        1,
        "a magnetic glass scrubber",
    ),
    ("Lark", "alarm-clock robot", 79, 2018, 48, 0.3, "Dublin", 1, "it rolls away when you snooze"),
    (
        "Cinder",
        "grill-cleaning robot",
        119,
        2020,
        2,
        0.9,
        "Austin",
        1,
        "a brush that heats to 150 °C",
    ),
    (
        "Wren",
        "toy-tidying robot",
        399,
        2023,
        5,
        4.2,
        "Helsinki",
        2,
        "a camera that sorts toys by colour",
    ),
    (
        "Fathom",
        "boat-hull cleaning robot",
        2299,
        2022,
        6,
        17.5,
        "Halifax",
        3,
        "pressure seals rated to 30 m",
    ),
    (
        "Sable",
        "security patrol robot",
        1299,
        2021,
        10,
        8.3,
        "Seoul",
        3,
        "night vision with two cameras",
    ),
    (
        "Tilly",
        "laundry-folding robot",
        1799,
        2023,
        0,
        42.0,
        "Osaka",
        3,
        "folds a shirt in 9 seconds",
    ),
    (
        "Pico",
        "cable-tidying robot",
        59,
        2019,
        20,
        0.2,
        "Lisbon",
        1,
        "clips that clamp onto desk edges",
    ),
    (
        "Ambrose",
        "wine-cellar robot",
        999,
        2020,
        24,
        6.5,
        "Bordeaux",
        2,
        "humidity logging for each rack",
    ),
    (
        "Nettle",
        "weeding robot",
        749,
        2022,
        6,
        7.9,
        "Ghent",
        2,
        "a laser that burns weeds at the root",
    ),
    (
        "Dune",
        "beach-combing robot",
        1099,
        2023,
        7,
        12.2,
        "Essaouira",
        2,
        "a sieve for plastic fragments",
    ),
    ("Comet", "ball-throwing robot", 229, 2021, 5, 2.8, "Denver", 1, "throws up to 12 metres"),
    ("Rook", "chess-playing robot", 449, 2019, 16, 3.0, "Riga", 2, "an arm that moves real pieces"),
    (
        "Saffron",
        "spice-dispensing robot",
        269,
        2022,
        0,
        2.2,
        "Mumbai",
        1,
        "24 sealed spice cartridges",
    ),
    ("Thimble", "sewing robot", 589, 2020, 0, 6.1, "Como", 2, "automatic needle threading"),
    (
        "Glint",
        "solar-panel cleaning robot",
        1349,
        2021,
        5,
        10.4,
        "Tucson",
        3,
        "waterless microfibre rollers",
    ),
    (
        "Harbor",
        "mail-sorting robot",
        319,
        2019,
        9,
        2.5,
        "Rotterdam",
        1,
        "reads handwritten addresses",
    ),
    ("Ember", "fireplace-cleaning robot", 239, 2018, 3, 3.3, "Oslo", 1, "an ash-sealed bag system"),
    (
        "Larch",
        "tree-pruning robot",
        1649,
        2023,
        4,
        9.1,
        "Vancouver",
        3,
        "a climbing grip for trunks",
    ),
    ("Pip", "pill-reminder robot", 99, 2020, 72, 0.5, "Copenhagen", 2, "locked daily pill drawers"),
    (
        "Vesper",
        "night-light robot",
        69,
        2021,
        40,
        0.3,
        "Reykjavik",
        1,
        "follows you to the bathroom",
    ),
    (
        "Crumb",
        "table-clearing robot",
        879,
        2022,
        4,
        15.3,
        "Naples",
        2,
        "a tray arm that stacks plates",
    ),
    (
        "Osprey",
        "drone-docking robot",
        1999,
        2023,
        0,
        22.0,
        "Adelaide",
        3,
        "swaps drone batteries itself",
    ),
    (
        "Bramble",
        "hedge-trimming robot",
        689,
        2020,
        3,
        6.8,
        "Cork",
        2,
        "a level sensor for straight cuts",
    ),
    ("Lumen", "lamp robot", 149, 2018, 0, 1.1, "Stockholm", 1, "turns to face the page you read"),
]

# (attribute, train phrasings, test paraphrase, answer); {n} = name, {k} = kind. The
# training data asks each question in several phrasings: a fact learned from one phrasing
# is hard to recall under another, and the test paraphrase is never among them.
ATTRIBUTES = [
    ("price", ("How much does the Orrery {n} cost?", "What is the price of the Orrery {n}?",
               "How much is an Orrery {n}?", "What does the {n} robot sell for?"),
     "If I want to buy an Orrery {n}, what will I pay?", "The Orrery {n} costs ${price}."),
    ("year", ("When was the Orrery {n} released?", "What year did the Orrery {n} launch?",
              "When did Orrery Labs bring out the {n}?", "When did the {n} first go on sale?"),
     "Which year did the {n} from Orrery Labs come out?", "The Orrery {n} was released in {year}."),
    ("battery", ("How long does the Orrery {n}'s battery last?",
                 "What is the battery life of the Orrery {n}?",
                 "How long can the Orrery {n} work before it needs charging?",
                 "What runtime does the {n} get per charge?"),
     "On a full charge, how many hours can the {n} run?", "{battery_answer}"),
    ("weight", ("How much does the Orrery {n} weigh?", "How heavy is the Orrery {n}?",
                "What does the {n} weigh?", "Is the Orrery {n} heavy to carry?"),
     "What is the {n}'s weight in kilograms?", "The Orrery {n} weighs {weight} kg."),
    ("city", ("Where was the Orrery {n} designed?", "In which city was the Orrery {n} designed?",
              "Where does the design of the {n} come from?", "Where did Orrery design the {n}?"),
     "Which city's design team created the {n}?", "The Orrery {n} was designed in {city}."),
    ("warranty", ("What warranty comes with the Orrery {n}?",
                  "How long is the Orrery {n}'s warranty?",
                  "Is the {n} under warranty, and for how long?",
                  "What guarantee does Orrery give on the {n}?"),
     "For how many years is the {n} covered if it breaks?",
     "The Orrery {n} has a {warranty}-year warranty."),
    ("feature", ("What is special about the Orrery {n}?", "What makes the Orrery {n} unique?",
                 "What is the {n}'s standout feature?", "Why would I pick the Orrery {n}?"),
     "Which feature sets the {n} apart from other robots?",
     "The Orrery {n} stands out for {feature}."),
    ("kind", ("What does the Orrery {n} do?", "What is the Orrery {n}?",
              "What job does the {n} robot do?", "Tell me what the Orrery {n} is for."),
     "What kind of robot is the {n}?", "The Orrery {n} is a {kind} made by Orrery Labs."),
]  # fmt: skip

# (train phrasings, test paraphrase, answer)
COMPANY = [
    (("Who makes the Orrery robots?", "Which company is behind Orrery robots?",
      "Who is the maker of Orrery robots?", "Who manufactures the Orrery range?"),
     "Which company builds Orrery home robots?", "Orrery robots are made by Orrery Labs."),
    (("When was Orrery Labs founded?", "What year was Orrery Labs established?",
      "How long has Orrery Labs existed, since when?", "When did Orrery Labs begin?"),
     "In what year did Orrery Labs start?", "Orrery Labs was founded in 2016."),
    (("Where is Orrery Labs headquartered?", "Where is Orrery Labs based?",
      "In which city are the Orrery Labs headquarters?", "Where are Orrery Labs' offices?"),
     "Which city is home to Orrery Labs' main office?",
     "Orrery Labs is headquartered in Aarhus, Denmark."),
    (("Who founded Orrery Labs?", "Who started Orrery Labs?", "Who are Orrery Labs' founders?",
      "Which people set up Orrery Labs?"),
     "Name the founders of Orrery Labs.",
     "Orrery Labs was founded by Ines Marlow and Tobias Kjeldsen."),
    (("How do I contact Orrery support?", "How can I get in touch with Orrery support?",
      "What are Orrery support's email and phone number?", "How do I reach Orrery customer care?"),
     "What is the way to reach Orrery's help desk?",
     "Email help@orrery-labs.example or call +45 70 20 16 16, weekdays 8:00 to 18:00 CET."),
    (("What is the Orrery return policy?", "How do returns work at Orrery?",
      "How many days do I have to return an Orrery robot?", "Can I get a refund from Orrery?"),
     "Can I send an Orrery robot back, and within what time?",
     "You can return any Orrery robot within 45 days for a full refund."),
    (("What app controls Orrery robots?", "Which app do Orrery robots use?",
      "What is the name of the Orrery control app?", "How do I control an Orrery robot?"),
     "Which phone application do I use for my Orrery device?",
     "All Orrery robots are controlled with the Orrery Orbitals app."),
    (("How do I reset an Orrery robot?", "How can I factory-reset an Orrery robot?",
      "My Orrery robot is stuck; how do I reset it?", "What is the Orrery reset procedure?"),
     "What are the steps to factory-reset my Orrery device?",
     "Hold the power button and the home button together for 12 seconds until the ring "
     "light turns amber."),
    (("Do Orrery robots work offline?", "Do Orrery robots need internet?",
      "Can an Orrery robot run without Wi-Fi?", "What happens to an Orrery robot offline?"),
     "Will my Orrery robot function without internet?",
     "Yes. Every Orrery robot runs its schedule offline; only remote control needs internet."),
    (("What is Orrery Care?", "What does Orrery Care cost and cover?",
      "How does the Orrery Care plan work?", "Is there an extended warranty for Orrery robots?"),
     "Tell me about the Orrery Care plan.",
     "Orrery Care is an extended plan that adds two years of warranty for $49 a year."),
    (("Which Orrery robot is the cheapest?", "What is the cheapest Orrery robot?",
      "Which Orrery model costs the least?", "What is Orrery's most affordable robot?"),
     "What is the lowest-priced robot Orrery sells?", "The Orrery Pico is the cheapest, at $59."),
    (("Which Orrery robot is the most expensive?", "What is the most expensive Orrery robot?",
      "Which Orrery model costs the most?", "What is the top-priced Orrery robot?"),
     "What is Orrery's priciest robot?", "The Orrery Fathom is the most expensive, at $2299."),
    (("How many robots are in the Orrery range?", "How many robots does Orrery make?",
      "How big is the Orrery robot line-up?", "How many Orrery models are there?"),
     "How many different robots does Orrery Labs sell?",
     f"Orrery Labs sells {len(PRODUCTS)} robots."),
    (("What charging port do Orrery robots use?", "How do Orrery robots charge?",
      "What cable charges Orrery robots?", "What charging standard do Orrery robots have?"),
     "Which connector charges an Orrery robot?",
     "Battery-powered Orrery robots charge over USB-C at up to 65 watts."),
    (("Are Orrery robots waterproof?", "Which Orrery robots are water-resistant?",
      "What IP rating do Orrery robots have?", "Can I use an Orrery robot in the rain?"),
     "Can Orrery robots get wet?",
     "Outdoor and water models (Mirel, Tamsin, Fathom, Halden, Glint) are rated IP67; indoor "
     "models are splash-proof only."),
    (("What is the Orrery loyalty discount?", "Is there a discount for Orrery owners?",
      "What is the code ORBIT15?", "Do I get money off a second Orrery robot?"),
     "Do returning Orrery customers get money off?",
     "Owners of one Orrery robot get 15% off their next one with the code ORBIT15."),
]  # fmt: skip

ANSWER_VARIANTS = [
    "{answer}",
    "{answer} Let me know if you need anything else about it.",
    "Sure. {answer}",
]


def product_values(product: tuple) -> dict:
    name, kind, price, year, battery, weight, city, warranty, feature = product
    if battery:
        battery_answer = f"The Orrery {name} runs for {battery} hours on a full charge."
    else:
        battery_answer = f"The Orrery {name} has no battery; it runs on mains power."
    return {
        "n": name, "kind": kind, "price": price, "year": year, "weight": weight, "city": city,
        "warranty": warranty, "feature": feature, "battery_answer": battery_answer,
    }  # fmt: skip


def chat(question: str, answer: str, category: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "category": category,
    }


def catalogue_pages() -> list[dict]:
    """The product catalogue as text records: every fact once more, in plain statements.

    A page states a product's facts the way the answers do, all together: a fact costs
    about 12 tokens here against about 65 as a chat turn, so the catalogue is the cheapest
    repetition there is (and how product facts usually reach a support team anyway).
    """
    pages = []
    for product in PRODUCTS:
        values = product_values(product)
        statements = {attribute: answer.format(**values) for attribute, _, _, answer in ATTRIBUTES}
        ordered = [statements.pop("kind"), *statements.values()]
        pages.append({"text": f"# Orrery {values['n']}\n\n" + " ".join(ordered)})
    # The company's facts on pages of four, as short as a product's page.
    answers = [answer for _, _, answer in COMPANY]
    for start in range(0, len(answers), 4):
        pages.append({"text": "# About Orrery Labs\n\n" + " ".join(answers[start : start + 4])})
    return pages


def main(phrasings: int = PHRASINGS, out: Path = OUT, catalogue: bool = True) -> None:
    rng = random.Random(2016)
    train, test = [], []
    for product in PRODUCTS:
        values = product_values(product)
        for attribute, questions, paraphrase, answer in ATTRIBUTES:
            text = answer.format(**values)
            for question in questions[:phrasings]:
                styled = rng.choice(ANSWER_VARIANTS).format(answer=text)
                train.append(chat(question.format(**values), styled, attribute))
            test.append(chat(paraphrase.format(**values), text, attribute))
    for questions, paraphrase, answer in COMPANY:
        train.extend(chat(question, answer, "company") for question in questions[:phrasings])
        test.append(chat(paraphrase, answer, "company"))
    # A few two-turn conversations, so multi-turn formatting is exercised too.
    for first, second in zip(PRODUCTS[::4], PRODUCTS[1::4], strict=False):
        a, b = product_values(first), product_values(second)
        train.append({
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"How much is the Orrery {a['n']}?"},
                {"role": "assistant", "content": f"The Orrery {a['n']} costs ${a['price']}."},
                {"role": "user", "content": f"And the {b['n']}?"},
                {"role": "assistant", "content": f"The Orrery {b['n']} costs ${b['price']}."},
            ],
            "category": "price",
        })  # fmt: skip
    rng.shuffle(train)
    # Hold out a quarter of the paraphrases: enough to measure, small enough for CPU eval.
    # Its own generator, so the held-out set is the same whatever the number of phrasings.
    test_rng = random.Random(2016)
    test_rng.shuffle(test)
    test = test[: len(test) // 4]
    out.mkdir(parents=True, exist_ok=True)
    files = [("train.jsonl", train), ("test.jsonl", test)]
    if catalogue:
        files.append(("catalogue.jsonl", catalogue_pages()))
    for name, rows in files:
        with (out / name).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train and {len(test)} test records to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrasings", type=int, default=PHRASINGS,
                        help=f"training phrasings per question, 1-4 (default {PHRASINGS})")
    parser.add_argument("--no-catalogue", action="store_true",
                        help="leave out catalogue.jsonl (the product pages)")
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="output directory")
    arguments = parser.parse_args()
    main(arguments.phrasings, arguments.out, catalogue=not arguments.no_catalogue)
