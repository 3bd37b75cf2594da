"""Time to first event and to first text, through the gateway with redaction on
and off, and straight to the mock upstream. Used by bench/ttft.sh.

Two ways of streaming the same replies:
- 4-byte deltas 25 ms apart: the worst case for a scanner that holds back a
  word until the character after it arrives (a 9-letter first word is three
  deltas);
- word pieces 20 ms apart (50 tokens a second): deltas shaped like a real
  model's tokens, a word with the space before it or a punctuation mark alone.
"""

import http.client
import json
import statistics
import sys
import time

GW, UP, KEY_ON, KEY_OFF = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
N = int(sys.argv[5]) if len(sys.argv) > 5 else 40
BODY = json.dumps({"model": "mock-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
# Openings of the kind models give; each goes on to an address and a number.
REPLIES = [
    "Certainly. Write to jane.doe@example.com or call +44 20 7946 0958 for the rest.",
    "The invoice went to jane.doe@example.com on Monday.",
    "I'm sorry, but +44 20 7946 0958 is the only number on file.",
    "Sure! Here is the address: jane.doe@example.com",
]
SCENARIOS = [("4-byte deltas, 25 ms apart", "4", 25), ("word pieces, 20 ms apart", "words", 20)]


def one(addr, key, reply, chunk, delay):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    headers = {
        "content-type": "application/json",
        "x-mock-reply": reply,
        "x-mock-chunk-bytes": chunk,
        "x-mock-delay-ms": str(delay),
    }
    if key:
        headers["authorization"] = f"Bearer {key}"
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    resp = conn.getresponse()
    first_event = first_text = None
    text = ""
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        now = time.perf_counter() - start
        first_event = first_event or now
        chunk_json = json.loads(line[5:])
        delta = (chunk_json.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
        if delta and first_text is None:
            first_text = now
        text += delta
    conn.close()
    return first_event * 1000, first_text * 1000, text


for scenario, chunk, delay in SCENARIOS:
    print(f"## {scenario}")
    for reply in REPLIES:
        print(f"reply: {reply!r}")
        medians = {}
        for name, addr, key in [("direct to the mock", UP, None), ("gateway, redaction off", GW, KEY_OFF), ("gateway, redaction on", GW, KEY_ON)]:
            runs = [one(addr, key, reply, chunk, delay) for _ in range(N)]
            events = [r[0] for r in runs]
            texts = [r[1] for r in runs]
            medians[name] = statistics.median(texts)
            print(f"  {name:<24} first event p50 {statistics.median(events):6.1f} ms   first text p50 {medians[name]:6.1f} ms   max {max(texts):6.1f} ms   text: {runs[0][2]!r}")
        added = medians["gateway, redaction on"] - medians["gateway, redaction off"]
        print(f"  redaction adds {added:.1f} ms to the first text ({added / delay:.1f} delta gaps)")
