"""Checks a schemathesis NDJSON report against the OpenAPI document it ran on:
every operation must have had at least one 2xx answer (so a run in which every
request was refused, say 401 for a bad token, fails), and prints per operation how
many requests were answered with each status.

    python3 api-fuzz/check_report.py OPENAPI.json REPORT.ndjson
"""

import collections
import json
import sys

# Operations that cannot succeed on the fuzz run's single voter, and where their
# success is tested instead.
NO_2XX_ON_ONE_VOTER = {
    "POST /v1/cluster/leader": "a transfer needs another voter (tests/operations.rs)",
}


def main(spec_path, report_path):
    spec = json.load(open(spec_path))
    operations = {
        f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item
    }
    statuses = collections.defaultdict(collections.Counter)
    for line in open(report_path):
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            label = f"{interaction['request']['method'].upper()} {recorder['label'].split(' ', 1)[-1]}"
            if recorder["label"] in operations:
                label = recorder["label"]
            statuses[label][response.get("status_code")] += 1
    missing = []
    for label in sorted(operations):
        counts = statuses.get(label, collections.Counter())
        ok = sum(n for status, n in counts.items() if status and 200 <= status < 300)
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items(), key=lambda kv: str(kv[0])))
        print(f"{ok:5d} 2xx  {label}  ({shown})")
        if ok == 0 and label in NO_2XX_ON_ONE_VOTER:
            print(f"      (no 2xx expected: {NO_2XX_ON_ONE_VOTER[label]})")
        elif ok == 0:
            missing.append(label)
    if missing:
        print(f"FAIL: {len(missing)} operations never answered 2xx:", *missing, sep="\n  ")
        return 1
    print(f"every one of {len(operations)} operations answered 2xx at least once")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
