#!/usr/bin/env python3
"""Held-out figures for the prompt-injection classifier: leave one source family out.

For each family of sources in the training file (bipia-code-*, jbb-*, arena-hard, ...), trains on
every other family with `halberd train-injection`, then scores that family's texts (from the
training and the dev file) with `halberd eval --dataset --model`. An attack family reports recall,
a benign one its false-positive rate. Figures from the same sources as the training data measure
memory; these measure how the detector holds on sources it never saw.

    python3 scripts/injection_heldout.py                      # target/release/halberd, target/injection-data
    python3 scripts/injection_heldout.py --bin target/debug/halberd --data /tmp/inj

The data directory is what scripts/injection_dataset.py writes (train.jsonl, dev.jsonl).
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

FAMILIES = ["bipia-code", "bipia-text", "jbb-goal-plain", "jbb", "gptfuzz", "xstest"]


def family(source):
    return next((f for f in FAMILIES if source.startswith(f)), source)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/halberd")
    ap.add_argument("--data", default="target/injection-data")
    args = ap.parse_args()
    read = lambda name: [json.loads(l) for l in open(os.path.join(args.data, name))]
    train, dev = read("train.jsonl"), read("dev.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: os.path.join(tmp, k) for k in ("train.jsonl", "test.jsonl", "model.bin")}
        for fam in sorted({family(r["source"]) for r in train}):
            rest = [r for r in train if family(r["source"]) != fam]
            held = [r for r in train + dev if family(r["source"]) == fam]
            for name, rows in (("train.jsonl", rest), ("test.jsonl", held)):
                with open(paths[name], "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            subprocess.run([args.bin, "train-injection", "--train", paths["train.jsonl"],
                            "--out", paths["model.bin"]], check=True, capture_output=True)
            out = subprocess.run([args.bin, "eval", "--dataset", paths["test.jsonl"],
                                  "--model", paths["model.bin"]],
                                 check=True, capture_output=True, text=True).stdout
            m = re.search(r"overall: precision \S+ recall (\S+) F1 \S+ false-positive rate (\S+)", out)
            attack = held[0]["label"] == "attack"
            what, value = ("recall", m.group(1)) if attack else ("false positives", m.group(2))
            print(f"{fam:<20} {what:<16} {value}  ({len(held)} texts)")


if __name__ == "__main__":
    main()
