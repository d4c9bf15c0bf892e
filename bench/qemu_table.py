#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The runs of bench/qemu-postcopy.sh as Markdown: QEMU's post-copy phase
(bench/qemu_migrate.py, one JSON object a line) against postcopy's time to
every page present (`postcopy netbench --load-only --json` runs), per vCPU
count and pattern, min / median / max and the ratio of the medians; then
QEMU's own counters.  usage: qemu_table.py [--vcpus "1 2"] QEMU.jsonl NETBENCH.json ..."""
import argparse
import json
import statistics


def mmm(xs):
    if not xs:
        return "—"
    return "%.2f / %.2f / %.2f" % (min(xs), statistics.median(xs), max(xs))


def med(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "—"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vcpus", default=None)
    ap.add_argument("qemu")
    ap.add_argument("netbench", nargs="*")
    a = ap.parse_args()
    q = [json.loads(l) for l in open(a.qemu) if l.strip()]
    nb = [json.load(open(p)) for p in a.netbench]
    vcpus = sorted({int(v) for v in a.vcpus.split()} if a.vcpus else {r["vcpus"] for r in q})

    def qemu_runs(v, pat):
        return [r for r in q if r["vcpus"] == v and r["pattern"] == pat]

    def pc_times(v, pat, mode):
        return [p["seconds_to_all_present"] for r in nb for p in r["under_load"]
                if p["vcpus"] == v and p["pattern"] == pat and p["mode"] == mode]

    out = ["| vCPUs | pattern | QEMU post-copy phase (s), min / median / max | postcopy exit: every page present (s) | exit ÷ QEMU | postcopy wait: every page present (s) | wait ÷ QEMU | runs QEMU / postcopy | verified |",
           "|---|---|---|---|---|---|---|---|---|"]
    for v in vcpus:
        for pat in ("seq", "random", "stride"):
            qr = qemu_runs(v, pat)
            qt = [r["postcopy_phase_s"] for r in qr]
            ex, wa = pc_times(v, pat, "exit"), pc_times(v, pat, "wait")
            if not qt and not ex and not wa:
                continue
            ok = all(r["verified"] for r in qr) and all(
                p["verified"] for r in nb for p in r["under_load"]
                if p["vcpus"] == v and p["pattern"] == pat)
            out.append("| %d | %s | %s | %s | %s | %s | %s | %d / %d | %s |" % (
                v, pat, mmm(qt), mmm(ex), ratio(med(ex), med(qt)), mmm(wa),
                ratio(med(wa), med(qt)), len(qt), len(ex), "all" if ok else "NO"))
    out.append("")
    out.append("QEMU's counters (medians over the runs; query-migrate on the source, blocktime on the destination):")
    out.append("")
    out.append("| vCPUs | pattern | phase (s) | destination running → completed (s) | downtime (ms) | total-time (ms) | bytes before the switch | post-copy bytes (MiB) | MiB/s in the phase | mbps (QEMU's, Mbit/s) | postcopy-requests | postcopy-blocktime (ms) | per-vCPU blocktime (ms) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for v in vcpus:
        for pat in ("seq", "stride"):
            qr = qemu_runs(v, pat)
            if not qr:
                continue

            def m(k):
                return med([r[k] for r in qr if r.get(k) is not None])
            vb = [r["postcopy_vcpu_blocktime_ms"] for r in qr if r.get("postcopy_vcpu_blocktime_ms")]
            vb = [med([b[i] for b in vb]) for i in range(len(vb[0]))] if vb else []
            out.append("| %d | %s | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %s |" % (
                v, pat, m("postcopy_phase_s"), m("dest_running_to_complete_s"),
                m("downtime_ms"), m("total_time_ms"),
                m("precopy_bytes") + m("downtime_bytes"), m("postcopy_bytes") / (1 << 20),
                m("postcopy_mib_per_s"), m("mbps"), m("postcopy_requests"),
                m("postcopy_blocktime_ms"), " / ".join("%.0f" % b for b in vb)))
    if nb:
        out.append("")
        out.append("postcopy's baselines in the same runs (medians): push alone %.2f s, plain sender/receiver pair %.2f s, raw 4 KiB round trip p50 %.1f µs." % (
            med([r["push_transfer_s"] for r in nb]), med([r["raw_transfer_s"] for r in nb]),
            med([r["raw_rtt_4k_us"]["p50"] for r in nb])))
    print("\n".join(out))


if __name__ == "__main__":
    main()
