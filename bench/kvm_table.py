#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turn the kvm-bench JSON lines of the nested VM (build-kvm/kvm-bench-LABEL.jsonl,
written by tests/kvm/nested.sh bench) into a Markdown table: per kernel, vCPU
count and path, the median of the repetitions, with each run's own baseline
and the median of the per-run ratios.  With --rewrite FILE, the table also
replaces what stands between the kvm-bench markers of FILE."""
import json
import os
import re
import statistics
import sys

from md_table import rewrite as rewrite_between_markers

args = sys.argv[1:]
rewrite = None
if args[:1] == ["--rewrite"]:
    rewrite, args = args[1], args[2:]
if not args:
    sys.exit("usage: kvm_table.py [--rewrite BENCHMARKS.md] kvm-bench-LABEL.jsonl...")


def series(r):
    if r["path"] != "wait":
        return r["path"]
    if r["vcpus"] == 1:
        return "wait (1 uffd, 1 reader)"
    if r["uffds"] == 1:
        return "wait 1 uffd, %d reader%s" % (r["readers"], "s" if r["readers"] > 1 else "")
    return "wait 1 uffd per vCPU"


ORDER = {"wait": 0, "exit": 1, "bitmap": 2}
points = {}
for path in args:
    label = re.sub(r"^kvm-bench-|\.jsonl$", "", os.path.basename(path))
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            points.setdefault((label, r["vcpus"], series(r)), []).append(r)

rows = ["| kernel | vCPUs | path | pages/s (median) | runs | baseline pages/s | ratio to baseline | resolve p50 / p99 µs | verified |",
        "|---|---|---|---|---|---|---|---|---|"]
for key in sorted(points, key=lambda k: (k[0], k[1], ORDER.get(k[2].split()[0], 9), k[2])):
    rs = points[key]
    rate = statistics.median(r["pages_per_sec"] for r in rs)
    base = statistics.median(r["baseline_pages_per_sec"] for r in rs)
    ratio = statistics.median(r["ratio_to_baseline"] for r in rs)
    mid = sorted(rs, key=lambda r: r["pages_per_sec"])[len(rs) // 2]
    lat = mid["stats"]["resolve_latency_us"]
    rows.append("| %s | %d | %s | %.0f | %s | %.0f | %.3f | %.0f / %.0f | %s |" % (
        key[0], key[1], key[2], rate, " / ".join("%.0f" % r["pages_per_sec"] for r in rs),
        base, ratio, lat["p50"], lat["p99"],
        "yes" if all(r["verified"] for r in rs) else "NO"))
table = "\n".join(rows)
print(table)

if rewrite:
    rewrite_between_markers(rewrite, "kvm-bench", table)
