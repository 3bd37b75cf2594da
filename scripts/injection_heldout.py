#!/usr/bin/env python3
"""Held-out figures for the prompt-injection detector: sources it never trained on.

Two kinds of held-out text, pooled into one estimate:

- leave one source family out: for each family of the training file
  (bipia-code-*, jbb-*, arena-hard, ...), train on every other family with
  `halberd train-injection` and score that family's texts (train and dev);
- sources outside training altogether (`extra.jsonl`: bastioncorpus,
  vigia-iberian, raucle-bench, promptwl and our synthetic tool outputs and
  questions), scored by the model under test (the shipped one by default).

Per family: recall of attacks, false-positive rate of benign texts, both at
the shipped flag threshold of each text's trust level, and ROC-AUC where both
labels occur. Pooled: the same over every held-out text, plus recall at a 3 %
false-positive rate (one threshold over the pooled scores), and the issue-20
targets with met / MISSED. Figures from the training sources measure memory;
these measure how the detector holds on text it never saw. Deterministic:
training is, and no sampling is involved. Report only: it exits 0 unless a
command fails.

    python3 scripts/injection_heldout.py                      # target/release/halberd, target/injection-data
    python3 scripts/injection_heldout.py --bin target/debug/halberd --data /tmp/inj [--model F]

The data directory is what scripts/injection_dataset.py writes.
"""
import argparse
import json
import os
import subprocess
import tempfile

FAMILIES = ["bipia-code", "bipia-text", "jbb-goal-plain", "jbb", "gptfuzz", "xstest",
            "synthetic-tool", "synthetic-planted", "synthetic-train"]
# Benign tool outputs and documents: the issue's "<= 2 % false positives on
# benign tool outputs at the untrusted threshold".
TOOL_OUTPUTS = ("synthetic-tool", "bipia-email-clean")


def family(source):
    return next((f for f in FAMILIES if source.startswith(f)), source)


def roc_auc(scored):
    """Probability that an attack outscores a benign text (ties count half)."""
    pos = [s for s, a in scored if a]
    neg = [s for s, a in scored if not a]
    if not pos or not neg:
        return None
    ranked = sorted(scored, key=lambda x: x[0])
    # Average ranks over ties, then the Mann-Whitney U statistic.
    ranks, i = {}, 0
    rank_sum = 0.0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            if ranked[k][1]:
                rank_sum += avg
        i = j + 1
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def score(binary, dataset, model, out):
    cmd = [binary, "eval", "--dataset", dataset, "--scores", out]
    if model:
        cmd += ["--model", model]
    subprocess.run(cmd, check=True, capture_output=True)
    return [json.loads(line) for line in open(out)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/halberd")
    ap.add_argument("--data", default="target/injection-data")
    ap.add_argument("--model", help="weights for the extra sources (default: compiled in)")
    args = ap.parse_args()
    read = lambda name: [json.loads(l) for l in open(os.path.join(args.data, name))]
    train, dev = read("train.jsonl"), read("dev.jsonl")
    extra = read("extra.jsonl") if os.path.exists(os.path.join(args.data, "extra.jsonl")) else []
    held_out = []  # (family, how, scored row)
    with tempfile.TemporaryDirectory() as tmp:
        path = lambda name: os.path.join(tmp, name)
        for fam in sorted({family(r["source"]) for r in train}):
            rest = [r for r in train if family(r["source"]) != fam]
            held = [r for r in train + dev if family(r["source"]) == fam]
            for name, rows in (("train.jsonl", rest), ("test.jsonl", held)):
                with open(path(name), "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            subprocess.run([args.bin, "train-injection", "--train", path("train.jsonl"),
                            "--out", path("model.bin")], check=True, capture_output=True)
            for row in score(args.bin, path("test.jsonl"), path("model.bin"), path("scores.jsonl")):
                held_out.append((fam, "left out", row))
        if extra:
            with open(path("extra.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in extra)
            for row in score(args.bin, path("extra.jsonl"), args.model, path("scores.jsonl")):
                held_out.append((family(row["source"]), "never trained", row))

    by_family = {}
    for fam, how, row in held_out:
        by_family.setdefault((fam, how), []).append(row)
    print(f"{'held-out family':<24} {'how':<14} {'attacks':>7} {'recall':>7} {'benign':>7} {'FP rate':>7} {'ROC-AUC':>7}")
    per_source_recall = {}
    for (fam, how), rows in sorted(by_family.items()):
        attacks = [r for r in rows if r["label"] == "attack"]
        benign = [r for r in rows if r["label"] == "benign"]
        recall = sum(r["detected"] for r in attacks) / len(attacks) if attacks else None
        fp = sum(r["detected"] for r in benign) / len(benign) if benign else None
        auc = roc_auc([(r["score"], r["label"] == "attack") for r in rows])
        if recall is not None:
            per_source_recall[fam] = recall
        cell = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
        print(f"{fam:<24} {how:<14} {len(attacks):>7} {cell(recall):>7} {len(benign):>7} {cell(fp):>7} {cell(auc, 4):>7}")

    rows = [row for _, _, row in held_out]
    attacks = [r for r in rows if r["label"] == "attack"]
    benign = [r for r in rows if r["label"] == "benign"]
    recall = sum(r["detected"] for r in attacks) / len(attacks)
    fp = sum(r["detected"] for r in benign) / len(benign)
    auc = roc_auc([(r["score"], r["label"] == "attack") for r in rows])
    # One threshold over the pooled scores letting at most 3 % of benign texts through.
    benign_scores = sorted((r["score"] for r in benign), reverse=True)
    cut = benign_scores[int(0.03 * len(benign_scores))]
    recall_at_3 = sum(r["score"] > cut for r in attacks) / len(attacks)
    tools = [r for r in benign if r["source"].startswith(TOOL_OUTPUTS)]
    tool_fp = sum(r["detected"] for r in tools) / len(tools)
    lookalike = [r for r in benign if r["source"] == "notinject"]
    allowed = 1 - sum(r["detected"] for r in lookalike) / len(lookalike) if lookalike else None
    worst = min(per_source_recall.items(), key=lambda kv: kv[1])
    print(f"\npooled over every held-out text: {len(attacks)} attacks, {len(benign)} benign")
    print(f"  at the shipped thresholds: recall {recall:.3f}, false-positive rate {fp:.3f}; ROC-AUC {auc:.4f}")
    print(f"  recall at a 3 % false-positive rate (one pooled threshold, {cut:.3f}): {recall_at_3:.3f}")
    verdict = lambda ok: "met" if ok else "MISSED"
    print("issue-20 targets (report only):")
    print(f"  recall >= 0.90 at <= 3 % false positives, pooled: {recall_at_3:.3f} {verdict(recall_at_3 >= 0.90)}")
    print(f"  >= 0.80 recall on every held-out attack source: lowest {worst[0]} {worst[1]:.3f} "
          f"{verdict(worst[1] >= 0.80)}")
    print(f"  <= 2 % false positives on benign tool outputs ({len(tools)}): {tool_fp:.3f} {verdict(tool_fp <= 0.02)}")
    if allowed is not None:
        print(f"  >= 90 % of NotInject look-alikes allowed: {allowed:.3f} {verdict(allowed >= 0.90)}")


if __name__ == "__main__":
    main()
