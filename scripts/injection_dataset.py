#!/usr/bin/env python3
"""Builds the prompt-injection training and dev (held-out) sets from ../shared/data.

    python3 scripts/injection_dataset.py [--data ../shared/data] [--out target/injection-data]

writes `train.jsonl`, `dev.jsonl` and `extra.jsonl` (sources held out of
training altogether, see below): one object per line with `text`, `label`
(`attack` or `benign`), `source`, `provenance` (`user` or `document`) and
`group` (items that must stay on one side of any split, also of the
cross-validation folds of `halberd train-injection --folds`).

The split is deterministic and has no random state: each item goes to dev when
the SHA-256 of its group key falls in the dev fraction. Items that share a
group never straddle the split, so near-duplicates cannot leak:
- JailbreakBench: the group is the behaviour (all 18 attack methods' prompts
  for one harmful goal land on the same side), and the plain goal too.
- GPTFuzzer: the group is the template; each template is filled with a few
  questions, chosen by hash.
- BIPIA: the benchmark's own train/test files (attacks and emails) are the
  split; an attack is inserted at the start, middle and end of emails.
- Synthetic items (scripts/injection_synthetic.py): the group is the
  template (benign) or the planted family and language (attacks).
- Every other source: the group is the text itself.
The training command (`halberd train-injection`) reads only train.jsonl.
"""
import argparse
import csv
import hashlib
import json
import os
import sys

DEV_FRACTION = 0.35


def h(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_dev(group: str) -> bool:
    return h(group) < DEV_FRACTION


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join("target", "injection-data"))
    args = parser.parse_args()
    data = args.data
    train, dev, extra = [], [], []

    def add(split_dev, text, label, source, provenance="user", group=None, to=None):
        text = text.strip()
        if not text:
            return
        item = {"text": text, "label": label, "source": source, "provenance": provenance,
                "group": group or text}
        (to if to is not None else dev if split_dev else train).append(item)

    # JailbreakBench: attack prompts by method; the plain goals are benign for an
    # injection detector (a harmful request is not an injection) and say whether
    # the model learned the wrapping rather than the topic.
    jbb = os.path.join(data, "jailbreakbench-artifacts")
    goals = {}
    for name in sorted(os.listdir(jbb)):
        if not name.endswith(".json"):
            continue
        method = name.split("__")[0].lower().replace("prompt_with_random_search", "random-search")
        with open(os.path.join(jbb, name), encoding="utf-8") as f:
            artifact = json.load(f)
        for row in artifact["jailbreaks"]:
            group = f"jbb:{row['index']}"
            goals[group] = row["goal"]
            if row.get("prompt"):
                add(is_dev(group), row["prompt"], "attack", f"jbb-{method}", group=group)
    for group, goal in sorted(goals.items()):
        add(is_dev(group), goal, "benign", "jbb-goal-plain", group=group)

    # GPTFuzzer templates, each filled with three questions chosen by hash.
    gf = os.path.join(data, "gptfuzz")
    with open(os.path.join(gf, "question_list.csv"), encoding="utf-8") as f:
        questions = [r["text"] for r in csv.DictReader(f)]
    templates = []
    with open(os.path.join(gf, "GPTFuzzer.csv"), encoding="utf-8") as f:
        templates += [("gptfuzz", r["text"]) for r in csv.DictReader(f)]
    with open(os.path.join(gf, "seed_short_25.csv"), encoding="utf-8") as f:
        templates += [("gptfuzz-short", r["text"]) for r in csv.DictReader(f)]
    for source, template in templates:
        group = "gptfuzz:" + template
        picked = sorted(questions, key=lambda q: h(template + q))[:3]
        for q in picked:
            add(is_dev(group), template.replace("[INSERT PROMPT HERE]", q), "attack", source,
                group=group)

    # BIPIA: indirect injections in emails, by the benchmark's own split.
    bipia = os.path.join(data, "bipia")
    for split in ("train", "test"):
        emails = [r["context"] for r in read_jsonl(os.path.join(bipia, f"email_{split}.jsonl"))]
        attacks = []
        for kind in ("text", "code"):
            with open(os.path.join(bipia, f"{kind}_attack_{split}.json"), encoding="utf-8") as f:
                for category, items in json.load(f).items():
                    attacks += [(kind, category, a) for a in items]
        for email in emails:
            add(split == "test", email, "benign", "bipia-email-clean", "document")
        for kind, category, attack in attacks:
            if split == "train":
                # The bare instruction: what the segment model learns to find.
                add(False, attack, "attack", f"bipia-{kind}-instruction", "document", group=attack)
            chosen = sorted(emails, key=lambda e: h(attack + e))[:2]
            for i, email in enumerate(chosen):
                for position in ("start", "middle", "end"):
                    if position == "start":
                        text = attack + "\n" + email
                    elif position == "end":
                        text = email + "\n" + attack
                    else:
                        lines = email.split("\n")
                        mid = len(lines) // 2
                        text = "\n".join(lines[:mid] + [attack] + lines[mid:])
                    add(split == "test", text, "attack", f"bipia-{kind}-{position}", "document",
                        group=attack)

    # Benign user prompts.
    for name in ("arena-hard-v0.1.jsonl", "arena-hard-v2.0.jsonl"):
        for row in read_jsonl(os.path.join(data, "arena-hard", name)):
            prompt = row.get("prompt") or row.get("turns", [{}])[0].get("content", "")
            add(is_dev(prompt), prompt, "benign", "arena-hard")
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for row in read_jsonl(os.path.join(data, "self-instruct", name)):
            instance = (row.get("instances") or [{}])[0].get("input", "")
            text = row["instruction"] + ("\n\n" + instance if instance else "")
            add(is_dev(text), text, "benign", "self-instruct")
    with open(os.path.join(data, "xstest", "xstest_prompts.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            source = "xstest-safe" if row["label"] == "safe" else "xstest-unsafe-plain"
            add(is_dev(row["prompt"]), row["prompt"], "benign", source)
    for name in ("NotInject_one.json", "NotInject_two.json", "NotInject_three.json"):
        with open(os.path.join(data, "notinject", name), encoding="utf-8") as f:
            for row in json.load(f):
                add(is_dev(row["prompt"]), row["prompt"], "benign", "notinject")

    # Ordinary prose as benign documents (training only: sentences with PII).
    with open(os.path.join(data, "presidio-synth-pii", "synth_dataset_v2.json"), encoding="utf-8") as f:
        for row in json.load(f):
            if not is_dev(row["full_text"]):
                add(False, row["full_text"], "benign", "presidio-prose", "document")

    # Held out from training altogether (extra.jsonl): sources the shipped
    # model has never seen, scored as they are by scripts/injection_heldout.py.
    # Training on them (tried: docs/injection.md) lifts them and costs the
    # direct-recall and ordinary-prompt targets with the present classifier.
    #
    # The four small sets of issue 20: hand-written attacks and benign
    # look-alikes, tool outputs and memories (bastioncorpus), Spanish and other
    # Iberian languages (vigia-iberian), injections inside documents
    # (raucle-bench), attack phrases in eleven languages (promptwl). Tool
    # outputs, retrieved documents and indirect injections are untrusted.
    untrusted_channels = ("tool_output", "memory", "agent-tool-output", "rag-documents",
                          "indirect_injection")
    for name in ("bastioncorpus", "vigia-iberian", "raucle-bench", "promptwl"):
        for row in read_jsonl(os.path.join(data, name, name + ".jsonl")):
            channel = row["source"].split("/")[1] if "/" in row["source"] else ""
            provenance = "document" if channel in untrusted_channels else "user"
            add(False, row["text"], row["label"], name, provenance, to=extra)

    # Our own templates (scripts/injection_synthetic.py): benign tool outputs
    # full of imperatives for the reader, the same with instructions planted
    # for the agent in eight languages, and questions that quote attacks.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import injection_synthetic
    for item in injection_synthetic.items():
        add(False, item["text"], item["label"], item["source"], item["provenance"],
            group=item["group"], to=extra)

    # Our own training documents (scripts/injection_training_docs.py): API
    # results and text whose imperatives address the reader (benign), and
    # instructions planted for the agent in eight languages. Training only;
    # the evaluation templates above are written apart from them.
    import injection_training_docs
    for item in injection_training_docs.items():
        add(False, item["text"], item["label"], item["source"], item["provenance"],
            group=item["group"])
        if "head" in item:
            train[-1]["head"] = item["head"]

    os.makedirs(args.out, exist_ok=True)
    for name, items in (("train.jsonl", train), ("dev.jsonl", dev), ("extra.jsonl", extra)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    counts = {}
    for split, items in (("train", train), ("dev", dev), ("extra", extra)):
        for item in items:
            key = (split, item["source"], item["label"])
            counts[key] = counts.get(key, 0) + 1
    for (split, source, label), n in sorted(counts.items()):
        print(f"{split:5} {source:24} {label:6} {n}", file=sys.stderr)


if __name__ == "__main__":
    main()
