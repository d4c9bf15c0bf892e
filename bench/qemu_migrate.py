#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""One whole QEMU post-copy migration over loopback TCP, driven over QMP.

Starts a destination QEMU (-incoming defer) and a source QEMU, both running
the bench guest (bench/qemu-guest) in a memfd-backed RAM of --mem, waits for
the guest to have filled its memory, turns on postcopy-ram (and
postcopy-preempt unless --no-preempt, postcopy-blocktime on the destination,
migration events on both), caps the precopy bandwidth so that almost every
page crosses in the post-copy phase, starts the migration and at once
migrate-start-postcopy.  When the destination reports "completed" (every
page received and placed), asks the guest to check every page and prints
one JSON object: the phase's times from QEMU's own event timestamps and the
counters of query-migrate on both ends.  Exit status: 0 verified, 1 not.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


class Qmp:
    """A QMP connection; events are kept with QEMU's timestamps."""

    def __init__(self, path, timeout):
        self.sock = connect_unix(path, timeout)
        self.buf = b""
        self.events = []
        self.read()  # the greeting
        self.cmd("qmp_capabilities")

    def read(self, timeout=60):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if "event" in msg:
            ts = msg["timestamp"]
            msg["t"] = ts["seconds"] + ts["microseconds"] / 1e6
            self.events.append(msg)
        return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self.read()
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError("%s: %s" % (name, msg["error"]["desc"]))

    def find(self, event, status=None):
        for e in self.events:
            if e["event"] == event and (status is None or e["data"]["status"] == status):
                return e
        return None

    def wait(self, event, status=None, timeout=120):
        end = time.monotonic() + timeout
        while not self.find(event, status):
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError("no %s %s within %d s" % (event, status or "", timeout))
            self.read(left)
            for e in self.events:
                if e["event"] == "MIGRATION" and e["data"]["status"] in ("failed", "postcopy-paused"):
                    raise RuntimeError("migration %s" % e["data"]["status"])
        return self.find(event, status)


def connect_unix(path, timeout):
    end = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def read_line(sock, prefix, timeout):
    """The first line on the guest's serial port that starts with prefix."""
    sock.settimeout(timeout)
    buf = b""
    end = time.monotonic() + timeout
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text.startswith(prefix) or text.startswith("BAD"):
                return text
        if time.monotonic() > end:
            raise RuntimeError("no %r from the guest within %d s" % (prefix, timeout))
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the guest's serial port closed")
        buf += chunk


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--kernel", required=True, help="the bench guest (multiboot ELF)")
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--vcpus", type=int, default=1)
    ap.add_argument("--stride", type=int, default=1, help="pages between touches (1: in order)")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--no-preempt", action="store_true", help="without postcopy-preempt")
    ap.add_argument("--precopy-bandwidth", type=int, default=1 << 20,
                    help="max-bandwidth before the switch, bytes/s (default 1 MiB/s)")
    ap.add_argument("--timeout", type=int, default=180)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="qemu-pc-")
    procs = []
    try:
        def start(name, extra):
            # One host thread per vCPU under TCG (7.2's default on x86, said anyway).
            accel = "tcg,thread=multi" if a.accel == "tcg" else a.accel
            args = [a.qemu, "-accel", accel, "-nodefaults", "-no-user-config",
                    "-machine", "pc,memory-backend=mem",
                    "-object", "memory-backend-memfd,id=mem,size=%s,share=on" % a.mem,
                    "-m", a.mem, "-smp", str(a.vcpus), "-display", "none",
                    "-kernel", a.kernel, "-append", "cpus=%d stride=%d" % (a.vcpus, a.stride),
                    "-chardev", "socket,id=ser,path=%s/%s.serial,server=on,wait=off" % (tmp, name),
                    "-serial", "chardev:ser",
                    "-qmp", "unix:%s/%s.qmp,server=on,wait=off" % (tmp, name)] + extra
            log = open("%s/%s.log" % (tmp, name), "w")
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))

        start("dst", ["-incoming", "defer"])
        start("src", [])
        dst = Qmp("%s/dst.qmp" % tmp, 30)
        src = Qmp("%s/src.qmp" % tmp, 30)
        dser = connect_unix("%s/dst.serial" % tmp, 30)
        sser = connect_unix("%s/src.serial" % tmp, 30)
        t_boot = time.time()
        ready = read_line(sser, "READY", a.timeout)
        if not ready.startswith("READY"):
            raise RuntimeError("guest: " + ready)
        fill_s = time.time() - t_boot

        caps = ["postcopy-ram", "events"] + ([] if a.no_preempt else ["postcopy-preempt"])
        src.cmd("migrate-set-capabilities",
                capabilities=[{"capability": c, "state": True} for c in caps])
        dst.cmd("migrate-set-capabilities",
                capabilities=[{"capability": c, "state": True}
                              for c in caps + ["postcopy-blocktime"]])
        src.cmd("migrate-set-parameters", **{"max-bandwidth": a.precopy_bandwidth})
        uri = "tcp:127.0.0.1:%d" % free_port()
        dst.cmd("migrate-incoming", uri=uri)
        t_migrate = time.time()
        src.cmd("migrate", uri=uri)
        src.cmd("migrate-start-postcopy")
        t_start_postcopy = time.time()

        done = dst.wait("MIGRATION", "completed", a.timeout)
        dinfo = dst.cmd("query-migrate")
        src.wait("MIGRATION", "completed", a.timeout)
        sinfo = src.cmd("query-migrate")
        src_active = src.find("MIGRATION", "postcopy-active")
        dst_resume = dst.find("RESUME")

        dser.sendall(b"V")
        verdict = read_line(dser, "VERIFY", a.timeout)
        ram = sinfo.get("ram", {})
        out = {
            "qemu": a.qemu, "accel": a.accel, "mem": a.mem, "vcpus": a.vcpus,
            "pattern": "seq" if a.stride == 1 else "stride",
            "stride": a.stride, "preempt": not a.no_preempt, "guest": ready,
            "guest_fill_s": fill_s,
            # From the source's switch to post-copy (its vCPUs stop) to the
            # destination's "completed": every page received and placed.
            "postcopy_phase_s": done["t"] - src_active["t"],
            # From the destination's vCPUs resuming to the same end.
            "dest_running_to_complete_s": done["t"] - dst_resume["t"] if dst_resume else None,
            "src_phase_s": src.find("MIGRATION", "completed")["t"] - src_active["t"],
            "migrate_to_complete_s": done["t"] - t_migrate,
            "migrate_to_switch_s": src_active["t"] - t_migrate,
            "start_postcopy_cmd_after_migrate_s": t_start_postcopy - t_migrate,
            "total_time_ms": sinfo.get("total-time"),
            "downtime_ms": sinfo.get("downtime"),
            "setup_time_ms": sinfo.get("setup-time"),
            "transferred": ram.get("transferred"),
            "precopy_bytes": ram.get("precopy-bytes"),
            "downtime_bytes": ram.get("downtime-bytes"),
            "postcopy_bytes": ram.get("postcopy-bytes"),
            "normal_pages": ram.get("normal"),
            "duplicate_pages": ram.get("duplicate"),
            "mbps": ram.get("mbps"),
            "page_size": ram.get("page-size"),
            "postcopy_requests": ram.get("postcopy-requests"),
            "postcopy_blocktime_ms": dinfo.get("postcopy-blocktime"),
            "postcopy_vcpu_blocktime_ms": dinfo.get("postcopy-vcpu-blocktime"),
            "verify": verdict,
            "verified": verdict.startswith("VERIFY OK"),
        }
        if out["postcopy_bytes"]:
            out["postcopy_mib_per_s"] = out["postcopy_bytes"] / (1 << 20) / out["postcopy_phase_s"]
        print(json.dumps(out))
        for q in (src, dst):
            try:
                q.cmd("quit")
            except (RuntimeError, OSError):
                pass
        return 0 if out["verified"] else 1
    except (RuntimeError, OSError, KeyError, TypeError) as e:
        sys.stderr.write("qemu_migrate: %s\n" % e)
        for name in ("src", "dst"):
            try:
                tail = open("%s/%s.log" % (tmp, name)).read()[-2000:]
            except OSError:
                tail = ""
            if tail:
                sys.stderr.write("--- %s QEMU:\n%s" % (name, tail))
        for p in procs:
            p.terminate()
        return 1
    finally:
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
