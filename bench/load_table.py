#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The migrations under load of `postcopy netbench --load-only --json` runs
as one Markdown table: per transport, mode, vCPUs and pattern, the median
over the runs of each figure, with the push alone, the plain pair and the
raw round trip of the same runs.  usage: load_table.py RUN.json ..."""
import json
import statistics
import sys


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    out = ["| transport | mode | vCPUs | pattern | every page present (s) | ÷ push alone | push MiB/s | ÷ push alone | demand faults | stall p50 / p99 / max (µs) | vCPUs blocked | verified |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    points = {}
    for r in runs:
        for p in r["under_load"]:
            key = (r["transport"], p["mode"], p["vcpus"], p["pattern"])
            points.setdefault(key, []).append(p)
    order = {"seq": 0, "random": 1, "stride": 2}
    for key in sorted(points, key=lambda k: (k[0], k[1], k[2], order[k[3]])):
        ps = points[key]
        out.append("| %s | %s | %d | %s | %.2f | %.2f | %.0f | %.2f | %.0f | %.0f / %.0f / %.0f | %.0f%% | %s |" % (
            key[0], key[1], key[2], key[3],
            med([p["seconds_to_all_present"] for p in ps]),
            med([p["vs_push_alone"] for p in ps]),
            med([p["push_mib_per_s"] for p in ps]),
            med([p["push_vs_push_alone"] for p in ps]),
            med([p["demand_faults"] for p in ps]),
            med([p["stall_latency_us"]["p50"] for p in ps]),
            med([p["stall_latency_us"]["p99"] for p in ps]),
            med([p["stall_latency_us"]["max"] for p in ps]),
            100 * med([p["blocked_fraction"] for p in ps]),
            "all" if all(p["verified"] for p in ps) else "NO"))
    out.append("")
    out.append("| transport | runs | raw 4 KiB round trip p50 (µs) | minor fault (µs) | push alone (s) | plain pair (s) | plain ÷ push |")
    out.append("|---|---|---|---|---|---|---|")
    for t in sorted({r["transport"] for r in runs}):
        rs = [r for r in runs if r["transport"] == t]
        out.append("| %s | %d | %.1f | %.2f | %.3f | %.3f | %.2f |" % (
            t, len(rs), med([r["raw_rtt_4k_us"]["p50"] for r in rs]),
            med([r["minor_fault_us"] for r in rs]),
            med([r["push_transfer_s"] for r in rs]),
            med([r["raw_transfer_s"] for r in rs]),
            med([r["transfer_ratio"] for r in rs])))
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: load_table.py RUN.json ...")
    main(sys.argv[1:])
