#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turn bench/run-matrix.sh's results.jsonl into a Markdown table (the
median of each point's repetitions, by pages/s) and the data files
plots.gp draws, next to results.jsonl."""
import json
import os
import shutil
import sys

path = sys.argv[1]
out = os.path.dirname(path)
runs = [json.loads(line) for line in open(path) if line.strip()]


def series(r):
    if r["mode"] == "exit":
        return "exit" if r["window"] == 1 else "exit -w %d" % r["window"]
    return "wait 1 uffd 1 reader" if r["one_uffd"] else "wait 1 uffd/vCPU"


def cdf_name(r):
    s = {"exit": "exit", "wait 1 uffd 1 reader": "wait1", "wait 1 uffd/vCPU": "waitper"}
    return s.get(series(r), "exitw%d" % r["window"])


points = {}
for i, r in enumerate(runs):
    r["index"] = i
    points.setdefault((r["delay_us"], series(r), r["vcpus"]), []).append(r)

medians = []
for key in sorted(points, key=lambda k: (k[0], k[1], k[2])):
    rs = sorted(points[key], key=lambda r: r["pages_per_sec"])
    m = rs[len(rs) // 2]
    m["reps"] = [x["pages_per_sec"] for x in points[key]]
    medians.append(m)

print("| delay µs | vCPUs | mode | pages/s (median) | runs | per vCPU | baseline pages/s | ratio | vCPU p50 µs | p99 µs | dup | verified |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in medians:
    per = sum(r["per_vcpu_pages_per_sec"]) / len(r["per_vcpu_pages_per_sec"])
    print("| %d | %d | %s | %.0f | %s | %.0f | %.0f | %.2f | %.1f | %.1f | %d | %s |" % (
        r["delay_us"], r["vcpus"], series(r), r["pages_per_sec"],
        " / ".join("%.0fK" % (x / 1e3) for x in r["reps"]), per,
        r["baseline_pages_per_sec"], r["ratio_to_baseline"],
        r["latency_us"]["p50"], r["latency_us"]["p99"],
        r["duplicate_fetches"], "yes" if r["verified"] else "NO"))

files = {}
for r in medians:
    key = "%s-d%d" % (cdf_name(r), r["delay_us"])
    files.setdefault(key, []).append(r)
    # The median run's latency CDF, under a name without the repetition.
    rep = [x["index"] for x in points[(r["delay_us"], series(r), r["vcpus"])]].index(r["index"]) + 1
    base = os.path.join(out, "cdf-%s-v%d-d%d" % (cdf_name(r), r["vcpus"], r["delay_us"]))
    if os.path.exists("%s-r%d.dat" % (base, rep)):
        shutil.copyfile("%s-r%d.dat" % (base, rep), base + ".dat")
for key, rs in files.items():
    with open(os.path.join(out, "rate-%s.dat" % key), "w") as f:
        for r in sorted(rs, key=lambda r: r["vcpus"]):
            f.write("%d %.0f %.3f %.0f\n" % (r["vcpus"], r["pages_per_sec"],
                                          r["ratio_to_baseline"], r["baseline_pages_per_sec"]))
