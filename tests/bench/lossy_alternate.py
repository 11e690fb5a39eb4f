#!/usr/bin/env python3
"""Alternating lossy-link runs: the tail of each request's latency, for one or more builds.

The lossy section of bench.py reports wrk's p99, one number; this records every request's
latency (ten keep-alive connections, each waiting 50 ms between requests, as the bench's rate
script does) and prints the p99 and the slow ones, so that the clusters that make the p99 (a
loss repaired by the next packet, by a probe, by a probe timeout) can be told apart:

    python3 tests/bench/lossy_alternate.py --rounds 4 before=/tmp/meshfed-old after=target/release/meshfed

A build may carry environment variables (`traced=target/release/meshfed,MESHFED_LOG=debug`).
The relay (1 % loss each way, 20 ms round trip) is bench.py's, between the same two gateways.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternate  # noqa: E402
import bench  # noqa: E402

CONNECTIONS = 10
INTERVAL_S = 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=20, help="seconds per run")
    parser.add_argument("builds", nargs="+", help="name=binary[,VAR=value...]")
    args = parser.parse_args()
    builds = alternate.parse_builds(args.builds)
    run = alternate.harness(builds, args.duration, "meshfed-lossy-")
    tails = {name: [] for name, _, _ in builds}
    try:
        run.write_files()
        run.start("nginx", ["nginx", "-c", run.path("nginx.conf"), "-g", "daemon off;"])
        run.start("relay", [bench.RELAY, f"{bench.RELAY_AT[0]}:{bench.RELAY_AT[1]}",
                            "127.0.2.1:15443", "0.01", str(bench.RTT_MS // 2)])
        for round in range(args.rounds):
            for name, binary, env in alternate.in_turn(builds, round):
                for cluster, config in (("west", "west.yaml"), ("east", "east-lossy.yaml")):
                    run.start(f"meshfed-{cluster}", [binary, "run", "--config", run.path(config)],
                              env={**os.environ, "MESHFED_LOG": "warn", **env})
                bench.wait_http(bench.HTTP["meshfed"])
                bench.run_wrk(bench.HTTP["meshfed"], 4, 2)  # warm-up
                latencies = asyncio.run(measure(bench.HTTP["meshfed"], args.duration))
                for cluster in ("east", "west"):
                    process = run.processes.pop(f"meshfed-{cluster}")
                    process.terminate()
                    process.wait(timeout=30)
                p99 = latencies[len(latencies) * 99 // 100]
                tails[name].append(p99 / bench.RTT_MS)
                slow = " ".join(f"{ms:.0f}" for ms in latencies if ms > 1.5 * bench.RTT_MS)
                print(f"round {round}: {name} {len(latencies)} requests, "
                      f"p50 {latencies[len(latencies) // 2]:.1f} ms, p99 {p99:.1f} ms "
                      f"({p99 / bench.RTT_MS:.2f} round trips); slow (ms): {slow}", flush=True)
        print("median p99 in round trips: " + " | ".join(
            f"{name} {statistics.median(values):.2f}" for name, values in tails.items()))
    finally:
        run.stop()


async def measure(address, duration):
    """Every request's latency in ms, sorted."""
    request = f"GET / HTTP/1.1\r\nHost: {bench.SERVICE}\r\n\r\n".encode()
    latencies = []

    async def connection():
        reader, writer = await asyncio.open_connection(*address)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            start = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append((time.monotonic() - start) * 1000)
            await asyncio.sleep(INTERVAL_S)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return sorted(latencies)


if __name__ == "__main__":
    main()
