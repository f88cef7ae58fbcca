#!/usr/bin/env python3
"""Writes lotledger's drain-policy scenarios (issue 12, part 1) into
crates/lotledger-testkit/tests/data/policy_scenarios/scenarios/, in the conformance format plus
`config.policy`, from the public scenarios of conformance/ and the answers SPEC Part II 8.3 gives
for the reference's soonest-expiry-first branch:

  S14 -> 5 000 000; S15 -> 5 000 000; S31 -> total 800, [null:800];
  S35 -> total 1200, [null:1000, 2026-12-01:200]. All other scenarios unchanged.

- v2_sNN: the public scenario under `v2`, its checks' expectations replaced by 8.3's (a check
  8.3 gives no answer for is dropped: s14's lots).
- switch_sNN: the public scenario twice under `v1,v2@T`, once as it is (before T: the public
  answers) and once shifted a day later onto other addresses and hashes (after T: 8.3's).

Usage: scripts/make-policy-scenarios.py (from the repository root).
"""
import copy
import json
import pathlib

SRC = pathlib.Path("conformance/scenarios")
OUT = pathlib.Path("crates/lotledger-testkit/tests/data/policy_scenarios/scenarios")

# SPEC Part II 8.3: the first balance / balance_details check of each scenario under v2.
V2_ANSWERS = {
    "s14_fifo_non_expiring_first": 5_000_000,
    "s15_fifo_expiring_first": 5_000_000,
    "s31_details_partial_consumption": {"total": 800, "details": [{"expiration_date": None, "amount": 800}]},
    "s35_details_sum_matches_total": {"total": 1200, "details": [
        {"expiration_date": None, "amount": 1000},
        {"expiration_date": "2026-12-01T00:00:00Z", "amount": 200}]},
}
DAY = 86400


def load(name):
    return json.loads((SRC / f"{name}.json").read_text())


def under_v2(scenario):
    """The scenario's steps with 8.3's answer; checks without one dropped."""
    answer = V2_ANSWERS[scenario["name"]]
    steps = []
    for step in scenario["steps"]:
        check = step.get("check", {})
        if "balance" in check or "balance_details" in check:
            step = dict(step, expect=answer)
        elif check:
            continue
        steps.append(step)
    return steps


def shifted(steps, suffix):
    """The steps a day later, on other addresses and item hashes."""
    text = json.dumps(steps)
    for name in ["0xcorner_case_user", "0xscenario2_user", "0xdetails3", "0xdetails6"]:
        text = text.replace(f'"{name}"', f'"{name}{suffix}"')
    steps = json.loads(text)
    for step in steps:
        if "post" in step:
            post = step["post"]
            post["item_hash"] += suffix
            content = post["content"]
            content["time"] += DAY
            for entry in content["content"].get("distribution", {}).get("credits", []):
                if "expiration" in entry:
                    entry["expiration"] += DAY * 1000
        for row in step.get("seed", []):
            row["credit_ref"] += suffix
            for key in ["message_timestamp", "expiration_date"]:
                if row.get(key):
                    row[key] = day_after(row[key])
        check = step.get("check")
        if check:
            for args in check.values():
                if "now" in args:
                    args["now"] = day_after(args["now"])
            expect = step.get("expect")
            if isinstance(expect, dict):
                for d in expect.get("details", []):
                    if d.get("expiration_date"):
                        d["expiration_date"] = day_after(d["expiration_date"])
    return steps


def day_after(rfc3339):
    from datetime import datetime, timedelta
    t = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")) + timedelta(days=1)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def first_instant(steps):
    for step in steps:
        if "post" in step:
            return step["post"]["content"]["time"]
        for row in step.get("seed", []):
            from datetime import datetime
            return datetime.fromisoformat(row["message_timestamp"].replace("Z", "+00:00")).timestamp()


def write(scenario):
    (OUT / f"{scenario['name']}.json").write_text(json.dumps(scenario, indent=1) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name in V2_ANSWERS:
        public = load(name)
        config = dict(public["config"], policy="v2")
        write({"name": f"v2_{name}", "source": f"conformance/scenarios/{name}.json and SPEC Part II 8.3",
               "about": "under v2 (soonest expiry first): the answer of the reference's branch",
               "config": config, "steps": under_v2(public)})
        # The switch: a day after the public scenario's last instant's day begins.
        from datetime import datetime, timezone
        start = datetime.fromtimestamp(first_instant(public["steps"]), tz=timezone.utc)
        switch = (start.replace(hour=0, minute=0, second=0) .timestamp()) + DAY
        at = datetime.fromtimestamp(switch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        after = shifted(under_v2(public), "_after")
        write({"name": f"switch_{name}", "source": f"conformance/scenarios/{name}.json and SPEC Part II 8.3",
               "about": f"v1 until {at}, then v2: the public answer before, 8.3's after",
               "config": dict(public["config"], policy=f"v1,v2@{at}"),
               "steps": copy.deepcopy(public["steps"]) + after})


main()
