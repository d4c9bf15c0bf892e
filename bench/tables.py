#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turn bench/run-matrix.sh's results.jsonl into Markdown tables and the
data files plots.gp draws (one per series, next to results.jsonl)."""
import json
import os
import sys

path = sys.argv[1]
out = os.path.dirname(path)
runs = [json.loads(line) for line in open(path) if line.strip()]


def series(r):
    if r["mode"] == "exit":
        return "exit" if r["window"] == 1 else "exit -w %d" % r["window"]
    return "wait 1 uffd 1 reader" if r["uffds"] == 1 else "wait 1 uffd/vCPU"


print("| delay | vCPUs | mode | pages/s | per vCPU | baseline pages/s | ratio | p50 µs | p99 µs | dup | verified |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    per = sum(r["per_vcpu_pages_per_sec"]) / len(r["per_vcpu_pages_per_sec"])
    print("| %d | %d | %s | %.0f | %.0f | %.0f | %.2f | %.1f | %.1f | %d | %s |" % (
        r["delay_us"], r["vcpus"], series(r), r["pages_per_sec"], per,
        r["baseline_pages_per_sec"], r["ratio_to_baseline"],
        r["latency_us"]["p50"], r["latency_us"]["p99"],
        r["duplicate_fetches"], "yes" if r["verified"] else "NO"))

# One data file per (series, delay): vcpus pages_per_sec ratio.
files = {}
for r in runs:
    key = "%s-d%d" % (series(r).replace(" ", "_").replace("/", "per"), r["delay_us"])
    files.setdefault(key, []).append(r)
for key, rs in files.items():
    with open(os.path.join(out, "rate-%s.dat" % key), "w") as f:
        for r in sorted(rs, key=lambda r: r["vcpus"]):
            f.write("%d %.0f %.3f\n" % (r["vcpus"], r["pages_per_sec"], r["ratio_to_baseline"]))
