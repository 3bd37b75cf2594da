#!/usr/bin/env python3
"""A seeded, generated PII set for `halberd eval --generated`: our own sentence
shapes filled by Faker in nine locales, each value at a varied boundary.

    python3 scripts/pii_generate.py --seed 1234 --n 1500 --out target/pii-generated.jsonl

One JSON object per line: `text`, `locale`, and `spans` (`type`, `start`,
`end` in bytes of the UTF-8 text). Types: email, phone, credit_card, us_ssn,
iban, ip_address. Every text also carries distractors that are not PII
(dates, times, prices, order numbers, postcodes, versions), so precision
means something. CI runs it with a fresh seed each time and prints the seed,
so no fixed sample can be tuned to; the same seed gives the same file.

Needs the `faker` package (installed by .ci/run into the CI virtual
environment).
"""
import argparse
import json
import random

from faker import Faker

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_IN"]

# Sentence shapes, `{v}` the value, `{d}` a distractor; several languages and
# registers (prose, chat, logs, forms, markdown, code, CSV).
SHAPES = [
    "{name} ({v}) wants a callback about order {d}.",
    "Please contact {name} at {v} before {d}.",
    "Contact: {v}",
    "{v}",
    "Hi, it's {first}. My details: {v}. Thanks!",
    "| {name} | {v} | {d} |",
    "- **{name}**: {v}",
    "user={first} value={v} ts={d}",
    '{{"name": "{name}", "value": "{v}", "ref": "{d}"}}',
    "{name};{v};{d}",
    "Bitte {name} unter {v} erreichen, Termin {d}.",
    "Merci de joindre {name} au {v} avant le {d}.",
    "Por favor, contacte a {name} en {v} antes del {d}.",
    "Contattare {name} al {v} entro il {d}.",
    "Neem contact op met {name} via {v} vóór {d}.",
    "Favor ligar para {name} no {v} até {d}.",
    "> Forwarded from {name} <{v}> on {d}",
    "log[{d}] client {v} accepted",
    "Send it to `{v}` (ref {d}).",
    "{name} — «{v}» — {d}",
    "'{v}' was entered in the form on {d}.",
    "Customer: {name}\nValue: {v}\nDate: {d}",
    "[{v}]({d})",
    "The value was {v}, not {d}.",
]

# Wrappers around a value: brackets, quotes of every kind, emphasis.
WRAPS = [("", "")] * 8 + [("(", ")"), ("[", "]"), ('"', '"'), ("'", "'"), ("“", "”"),
                          ("«", "»"), ("`", "`"), ("**", "**"), ("*", "*"), ("<", ">"),
                          ("{", "}"), ("「", "」"), ("（", "）")]


def distractor(fake, rng):
    kind = rng.randrange(7)
    if kind == 0:
        return fake.date()
    if kind == 1:
        return fake.time()
    if kind == 2:
        return f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02} EUR"
    if kind == 3:
        return f"#{rng.randint(10000, 9999999)}"
    if kind == 4:
        return fake.postcode()
    if kind == 5:
        return f"v{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}"
    return fake.date_time().isoformat()


def value(fake, rng, locale, kind):
    if kind == "email":
        return fake.email()
    if kind == "phone":
        return fake.phone_number()
    if kind == "credit_card":
        return fake.credit_card_number()
    if kind == "us_ssn":
        return fake.ssn()
    if kind == "iban":
        return fake.iban()
    return fake.ipv4_public() if rng.random() < 0.7 else fake.ipv6()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    fakers = {}
    for loc in LOCALES:
        fake = Faker(loc)
        fake.seed_instance(rng.randrange(2**32))
        fakers[loc] = fake
    kinds = ["email", "phone", "credit_card", "us_ssn", "iban", "ip_address"]
    with open(args.out, "w", encoding="utf-8") as out:
        for i in range(args.n):
            kind = kinds[i % len(kinds)]
            # SSNs are American; Faker's en_IN IBANs are not valid IBANs (GB
            # with a 21-character length), so IBANs come from the other locales.
            if kind == "us_ssn":
                locale = "en_US"
            elif kind == "iban":
                locale = rng.choice([loc for loc in LOCALES if loc != "en_IN"])
            else:
                locale = rng.choice(LOCALES)
            fake = fakers[locale]
            v = value(fake, rng, locale, kind)
            open_, close = rng.choice(WRAPS)
            shape = rng.choice(SHAPES)
            name = fake.name()
            text = shape.format(name=name, first=name.split()[0], v=open_ + v + close,
                                d=distractor(fake, rng))
            start = text.encode("utf-8").index((open_ + v + close).encode("utf-8")) + len(open_.encode("utf-8"))
            end = start + len(v.encode("utf-8"))
            out.write(json.dumps({"text": text, "locale": locale,
                                  "spans": [{"type": kind, "start": start, "end": end}]},
                                 ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
