#!/usr/bin/env python3
"""Writes crates/lotledger-core/tests/data/post_content.json: POST contents checked by
aleph-message's `PostContent` model (the reference validates every POST content with it before
any credit rule, SPEC Part II 9.1), each with the errors pydantic reports: type, location and
message, in pydantic's order. `crates/lotledger-core/tests/post_content.rs` checks lotledger
gives the same for every case.

Usage (in a virtualenv): pip install aleph-message==1.7.0 && python3 scripts/gen-post-content-cases.py
"""

import json
from pathlib import Path

from aleph_message.models import PostContent
from pydantic import ValidationError

OUT = Path(__file__).resolve().parent.parent / "crates/lotledger-core/tests/data/post_content.json"
HASH = "ab" * 32
CHAIN_REF = {
    "chain": "ETH", "item_content": "x", "item_hash": HASH, "item_type": "inline",
    "sender": "0xs", "signature": "0xg", "time": 1.5,
}


DROP = object()
BASE = {
    "address": "0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC",
    "time": 1772323200.0,
    "type": "aleph_credit_transfer",
    "content": {"transfer": {"credits": [{"address": "0xabc", "amount": 5}]}},
}


def changed(template, changes):
    """A copy of `template` with `changes` set (a value of DROP removes the key)."""
    out = dict(template)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def base(**changes):
    return changed(BASE, changes)


def ref(**changes):
    return changed(CHAIN_REF, changes)


CASES = [
    base(),
    base(time=0), base(time=0.0), base(time=-0.0), base(time=-1), base(time=-1e-7),
    base(time=-0.5), base(time=9223372036), base(time=9223372036.0),
    base(time=9223372036.000001), base(time=9223372037), base(time=1e12), base(time=1.7e308),
    base(time="12"), base(time=" 5 "), base(time="-1"), base(time="9223372037"),
    base(time="1_0"), base(time="inf"), base(time="nan"), base(time="-inf"), base(time=True),
    base(time=False), base(time=None), base(time="later"), base(time=[1]), base(time=DROP),
    base(memo="x"), base(memo=None), base(memo=1, zeta=2), base(Time=1),
    base(memo=1, time=-1), base(channel="ALEPH_CREDIT"), base(tags=["a"]), base(item_hash="h"),
    base(ref="order-1"), base(ref=None), base(ref=5), base(ref=True), base(ref=[HASH]),
    base(ref=CHAIN_REF), base(ref={}), base(ref=ref(chain="FOO")), base(ref=ref(item_hash="ab")),
    base(ref=ref(item_hash="Qm" + "a" * 44)), base(ref=ref(item_hash="bafy" + "a" * 55)),
    base(ref=ref(item_type="web")), base(ref=ref(type="STORE")), base(ref=ref(type="POST")),
    base(ref=ref(time="soon")), base(ref=ref(channel="c" * 129)), base(ref=ref(channel="c")),
    base(ref=ref(sender=5, signature=None)), base(ref=ref(extra_key=1)),
    base(ref=ref(chain=DROP, item_content=DROP)),
    base(type="amend"), base(type="amend", ref="abc"), base(type="amend", ref=5),
    base(type=5), base(type=None), base(type=DROP),
    base(address=5), base(address=None), base(address=DROP), base(address=""),
    base(content=None), base(content=DROP), base(content=[1]), base(content="text"),
    base(content={"tags": ["a", "b"]}), base(content={"tags": []}), base(content={"tags": None}),
    base(content={"tags": ["a"] * 16}), base(content={"tags": ["a"] * 17}),
    base(content={"tags": ["a"] * 17 + [""]}), base(content={"tags": [""]}),
    base(content={"tags": "x"}), base(content={"tags": 5}), base(content={"tags": {"a": 1}}),
    base(content={"tags": [None, "x" * 257, 5, "y" * 256]}),
    base(content={"transfer": {"credits": []}, "tags": ["ok"]}),
    base(address=None, time=-1, type=None, content={"tags": 5}, ref=1, memo=2),
]


def main() -> None:
    cases = []
    for content in CASES:
        try:
            PostContent.model_validate(content)
            errors = []
        except ValidationError as e:
            errors = [{"type": x["type"], "loc": list(x["loc"]), "msg": x["msg"]} for x in e.errors()]
        cases.append({"content": content, "errors": errors})
    OUT.write_text(json.dumps(cases, indent=1, allow_nan=False) + "\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
