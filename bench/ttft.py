"""Time to first event and to first text, through the gateway with redaction on
and off, and straight to the mock upstream. Used by bench/ttft.sh."""

import http.client
import json
import statistics
import sys
import time

GW, UP, KEY_ON, KEY_OFF = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
N = int(sys.argv[5]) if len(sys.argv) > 5 else 40
BODY = json.dumps({"model": "mock-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {
    "content-type": "application/json",
    # A model answer in 4-byte deltas, 25 ms apart (40 deltas/s).
    "x-mock-reply": "Certainly. Write to jane.doe@example.com or call +44 20 7946 0958 for the rest.",
    "x-mock-chunk-bytes": "4",
    "x-mock-delay-ms": "25",
}


def one(addr, key):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    headers = dict(HEADERS)
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
        chunk = json.loads(line[5:])
        delta = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
        if delta and first_text is None:
            first_text = now
        text += delta
    conn.close()
    return first_event * 1000, first_text * 1000, text


for name, addr, key in [("direct to the mock", UP, None), ("gateway, redaction off", GW, KEY_OFF), ("gateway, redaction on", GW, KEY_ON)]:
    runs = [one(addr, key) for _ in range(N)]
    events = [r[0] for r in runs]
    texts = [r[1] for r in runs]
    print(f"{name:<24} first event p50 {statistics.median(events):6.1f} ms   first text p50 {statistics.median(texts):6.1f} ms   max {max(texts):6.1f} ms   text: {runs[0][2]!r}")
