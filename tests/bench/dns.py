#!/usr/bin/env python3
"""DNS benchmark: meshfed's DNS server against Knot DNS, same records, same UDP workers.

For each zone size, dnsperf runs the same query file against Knot DNS and against meshfed's
server (tests/src/bin/meshfed-dns-bench.rs, the gateway's DNS code on a synthetic catalog),
then against meshfed again while the zone is rebuilt and swapped 100 times a second.
Reports queries per second, mean latency, lost queries and the response codes seen: a torn or
failed answer would show as a lost query or a shifted NXDOMAIN share. Run through
`tests/bench/run-dns`; it measures, it does not pass or fail.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "target", "release", "meshfed-dns-bench")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--sizes", default="1000,100000", help="zone sizes, in services")
    parser.add_argument("--changes", type=float, default=100.0, help="zone changes per second")
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="meshfed-dns-bench-") as work:
            subprocess.run([BENCH, "write", str(size), work], check=True)
            queries = os.path.join(work, "queries.txt")
            with open(queries) as f:
                lines = sum(1 for _ in f)
            port = free_port()
            with knot(work, port, workers):
                rows.append((size, lines, "Knot DNS", "", dnsperf(port, queries, args.duration)))
            port = free_port()
            with meshfed(port, size, 0) as _:
                rows.append((size, lines, "meshfed", "", dnsperf(port, queries, args.duration)))
            port = free_port()
            with meshfed(port, size, args.changes) as server:
                result = dnsperf(port, queries, args.duration)
                achieved = server.changes_per_second()
                rows.append((size, lines, "meshfed", f"{achieved:.0f} changes/s", result))
    report = table(rows, workers, args.duration)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


class Server:
    def __init__(self, argv, ready=None, stderr=None):
        self.stderr = stderr
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.ready = ready

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=10)


class Meshfed(Server):
    def __init__(self, port, size, changes):
        self.log = tempfile.NamedTemporaryFile(mode="w+", prefix="meshfed-dns-", suffix=".log")
        argv = [BENCH, "serve", f"127.0.0.1:{port}", str(size)]
        if changes:
            argv.append(str(changes))
        super().__init__(argv, stderr=self.log)
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            sys.exit(f"meshfed-dns-bench did not start: {line!r}")

    def changes_per_second(self):
        self.log.seek(0)
        rates = [float(m.group(1)) for m in re.finditer(r"changes/s ([0-9.]+)", self.log.read())]
        # The steady state: drop the first second, which includes start-up.
        rates = rates[1:] or rates
        return sum(rates) / len(rates) if rates else 0.0


def meshfed(port, size, changes):
    return Meshfed(port, size, changes)


class Knot(Server):
    def __init__(self, work, port, workers):
        conf = os.path.join(work, "knot.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    listen: 127.0.0.1@{port}
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1
    rundir: {work}
log:
  - target: stderr
    any: error
database:
    storage: {work}/db
template:
  - id: default
    storage: {work}
    semantic-checks: off
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: clusterset.local
    file: clusterset.local.zone
""")
        super().__init__(["knotd", "-c", conf], stderr=subprocess.DEVNULL)
        wait_answering(port)


def knot(work, port, workers):
    return Knot(work, port, workers)


def wait_answering(port, timeout=60):
    """Until the server answers the zone's SOA (Knot loads a large zone for a while)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=1", "clusterset.local", "SOA"],
            capture_output=True, text=True,
        ).stdout
        if "status: NOERROR" in out and "ANSWER: 1" in out:
            return
        time.sleep(0.2)
    sys.exit(f"no DNS answer on port {port}")


def dnsperf(port, queries, duration):
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(duration),
         "-c", "4", "-q", "200", "-T", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    def number(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")
    codes = dict(re.findall(r"(NOERROR|NXDOMAIN|SERVFAIL|REFUSED|FORMERR) (\d+)", out))
    return {
        "qps": number(r"Queries per second:\s+([0-9.]+)"),
        "latency_ms": number(r"Average Latency \(s\):\s+([0-9.]+)") * 1000,
        "lost": number(r"Queries lost:\s+(\d+)"),
        "sent": number(r"Queries sent:\s+(\d+)"),
        "codes": codes,
    }


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(rows, workers, duration):
    head = (f"DNS, {workers} UDP workers each, dnsperf -c 4 -q 200 for {duration} s per run, "
            "all on one host.\n\n"
            "| Services | Query names | Server | While | Queries/s | vs Knot | Mean latency | Lost | NXDOMAIN share |\n"
            "|---:|---:|---|---|---:|---:|---:|---:|---:|\n")
    knot_qps = {size: r["qps"] for size, _, server, _, r in rows if server == "Knot DNS"}
    lines = []
    for size, names, server, during, r in rows:
        answered = sum(int(v) for v in r["codes"].values()) or 1
        nx = int(r["codes"].get("NXDOMAIN", 0)) / answered
        ratio = r["qps"] / knot_qps[size] if knot_qps.get(size) else float("nan")
        lines.append(
            f"| {size:,} | {names:,} | {server} | {during or 'zone unchanged'} | {r['qps']:,.0f} | "
            f"{ratio:.2f}x | {r['latency_ms']:.3f} ms | {int(r['lost'])} of {int(r['sent']):,} | {nx:.2%} |"
        )
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
