#!/usr/bin/env python3
"""Copies the message-list cases of ../shared/NODE-API.md (Appendix A.2 to A.6) into
crates/lotledger-testkit/tests/data/node_api_lists.json: for each request, its path and query,
the status, the Content-Type when given, and the verbatim body, or (for the cases the page
describes in prose) the listed item hashes' prefixes and pagination_total. Nothing is retyped."""
import json, re, sys, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
src = root.parent / "shared" / "NODE-API.md"
text = src.read_text()
start = text.index("### A.2 ")
end = text.index("### A.7 ")
lines = text[start:end].split("\n")
cases = []
heading = None
i = 0
while i < len(lines):
    line = lines[i]
    if line.startswith("#### "):
        heading = line[5:].strip()
    m = re.match(r"^`GET ([^`]+)` → (\d{3})(.*)$", line)
    if m:
        uri, status, rest = m.group(1), int(m.group(2)), m.group(3).strip()
        case = {"heading": heading, "uri": uri, "status": status}
        prose = re.match(r"^: hashes (.*); `pagination_total` (\d+)\.$", rest)
        if prose:
            case["hashes"] = re.findall(r"`([0-9a-f]+)…`", prose.group(1))
            case["total"] = int(prose.group(2))
        else:
            if rest:
                case["content_type"] = rest
            j = i + 1
            while not lines[j].startswith("```"):
                if lines[j].startswith("`GET "):
                    sys.exit(f"no body for {uri}")
                j += 1
            k = j + 1
            body = []
            while not lines[k].startswith("```"):
                body.append(lines[k])
                k += 1
            case["body"] = "\n".join(body)
            i = k
        cases.append(case)
    i += 1
# A.9: the websocket's frames, each with the query of its connection and whether it is a
# history frame or a live push.
ws_text = text[text.index("### A.9 "):]
frames = []
for m in re.finditer(r"^`(\?[^`]*)`, (history|live push[^\n]*?) — text frame\n```\n(.*?)\n```", ws_text, re.M | re.S):
    frames.append({"query": m.group(1), "kind": "history" if m.group(2) == "history" else "live",
                   "body": m.group(3)})
for m in re.finditer(r"^`([^`?]*)`, (live push[^\n]*?) — text frame\n```\n(.*?)\n```", ws_text, re.M | re.S):
    sys.exit("unexpected frame heading")
out = {
    "source": "../shared/NODE-API.md Appendix A.2-A.6 and A.9 (pyaleph HEAD b09db708, captured "
    "2026-11-29), copied by scripts/extract-node-api-lists.py, not retyped. The node had "
    "received the eight envelopes of A.1 (node_api_messages.json); the live frames are of "
    "the transfer.",
    "cases": cases,
    "websocket": frames,
}
dest = root / "crates" / "lotledger-testkit" / "tests" / "data" / "node_api_lists.json"
dest.parent.mkdir(parents=True, exist_ok=True)
dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(f"{len(cases)} cases -> {dest}")
