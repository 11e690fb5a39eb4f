#!/usr/bin/env python3
"""Alternating runs: HAProxy and one or more meshfed builds, round after round, on bench.py's
configs. On a shared, noisy machine one run's ratio is one draw; medians over rounds that each
measure HAProxy too are what tell two builds apart (docs/benchmarks.md).

    python3 tests/bench/alternate.py --rounds 8 before=/tmp/meshfed-old after=target/release/meshfed

A build may carry environment variables: `traced=target/release/meshfed,MESHFED_LOG=debug`.
Each round: HAProxy, then each build (both gateways restarted on it), wrk at --connections for
--duration seconds; it prints requests/s, the ratio to that round's HAProxy, p50 and both
gateways' CPU s per 100k requests, then the medians. The builds take turns at going first.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("builds", nargs="+", help="name=binary[,VAR=value...]")
    args = parser.parse_args()
    builds = parse_builds(args.builds)
    run = harness(builds, args.duration, "meshfed-alternate-")
    results = {name: [] for name, _, _ in builds}
    haproxy_cpu = []
    try:
        run.write_files()
        run.start("nginx", ["nginx", "-c", run.path("nginx.conf"), "-g", "daemon off;"])
        run.start("haproxy-b", ["haproxy", "-f", run.path("haproxy-b.cfg")])
        run.start("haproxy-a", ["haproxy", "-f", run.path("haproxy-a.cfg")])
        bench.wait_http(bench.HTTP["haproxy"])
        bench.run_wrk(bench.HTTP["haproxy"], 32, 2)
        for round in range(args.rounds):
            haproxy = measure(run, "haproxy", args)
            haproxy_cpu.append(haproxy[2])
            line = f"round {round}: haproxy {haproxy[0]:,.0f} cpu {haproxy[2]:.2f}"
            for name, binary, env in in_turn(builds, round):
                start(run, binary, env)
                rps, p50, cpu = measure(run, "meshfed", args)
                stop(run)
                results[name].append((rps / haproxy[0], cpu))
                line += f" | {name} {rps:,.0f} ({rps / haproxy[0]:.2f}x) p50 {p50 * 1000:.2f} ms cpu {cpu:.2f}"
            print(line, flush=True)
        print("median: " + " | ".join(
            f"{name} {statistics.median(r[0] for r in rows):.3f}x HAProxy, cpu {statistics.median(r[1] for r in rows):.2f}"
            for name, rows in results.items()) + f" | HAProxy cpu {statistics.median(haproxy_cpu):.2f}")
    finally:
        run.stop()


def parse_builds(specs):
    """`name=binary[,VAR=value...]` specs as (name, absolute binary path, environment)."""
    builds = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        binary, *pairs = rest.split(",")
        builds.append((name, os.path.abspath(binary), dict(p.split("=", 1) for p in pairs)))
    return builds


def in_turn(builds, round):
    """The builds in the order to measure them in `round`: each round starts with the next one,
    since on this machine the one measured first fared better (about 0.3 s of CPU per 100k
    requests in one test)."""
    first = round % len(builds)
    return builds[first:] + builds[:first]


def harness(builds, duration, prefix):
    """bench.py's harness in a new directory, its certificates made by the first build."""
    bench.MESHFED = builds[0][1]  # for `meshfed ca init`

    class Options:
        tunnels = 0
        only = []

    Options.duration = duration
    return bench.Bench(tempfile.mkdtemp(prefix=prefix), Options())


def start(run, binary, env):
    for cluster in ("west", "east"):
        run.start(f"meshfed-{cluster}", [binary, "run", "--config", run.path(f"{cluster}.yaml")],
                  env=dict(os.environ, MESHFED_LOG="warn", **env))
    bench.wait_http(bench.HTTP["meshfed"])
    bench.run_wrk(bench.HTTP["meshfed"], 32, 2)


def stop(run):
    for cluster in ("east", "west"):
        process = run.processes.pop(f"meshfed-{cluster}")
        process.terminate()
        process.wait(timeout=30)


def measure(run, path, args):
    gateways = run.gateways(path)
    before = run.cpu(gateways)
    result = bench.run_wrk(bench.HTTP[path], args.connections, args.duration)
    after = run.cpu(gateways)
    cpu = sum(after[g] - before[g] for g in gateways) * 1e5 / max(result["requests"], 1)
    return result["rps"], result["p50"], cpu


if __name__ == "__main__":
    main()
