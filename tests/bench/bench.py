#!/usr/bin/env python3
"""meshfed's benchmark: three paths side by side, in one run, on this machine.

- direct:  load generator -> nginx
- meshfed: load generator -> gateway east -> QUIC/HTTP/3 -> gateway west -> nginx
- haproxy: load generator -> HAProxy A -> HTTP/2 over mutual TLS -> HAProxy B -> nginx

The same nginx, wrk, h2load and iperf3 for all three. Everything binds distinct 127.x.y.z
addresses. See docs/benchmarks.md for what each number means; `tests/bench/run` builds the
release binaries, installs what is missing, and calls this.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
MESHFED = os.path.join(TARGET, "release", "meshfed")
RELAY = os.path.join(TARGET, "release", "meshfed-relay")

SERVICE = "web.bench.svc.clusterset.local"
NGINX = ("127.0.0.1", 18080)
IPERF = ("127.0.0.1", 15201)
SINK = ("127.0.0.1", 19999)

# Where the load generator connects, per path.
HTTP = {"direct": NGINX, "meshfed": ("127.0.1.1", 15080), "haproxy": ("127.0.3.1", 15080)}
IPERF_AT = {"direct": IPERF, "meshfed": ("127.0.1.1", 15201), "haproxy": ("127.0.3.1", 15201)}
SINK_AT = {"meshfed": ("127.0.1.1", 19000), "haproxy": ("127.0.3.1", 19000)}
RELAY_AT = ("127.0.5.1", 15443)
# nginx also serves HTTP/2 with prior knowledge, for the direct path of the HTTP/2 table.
NGINX_H2 = ("127.0.0.1", 18082)
SECTIONS = ["http", "fixed_rate", "bulk", "tunnels", "lossy"]
RTT_MS = 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--tunnels", type=int, default=10_000, help="open TCP tunnels")
    parser.add_argument("--out", help="also write the report (markdown) here")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only these sections (repeatable); all by default")
    parser.add_argument("--sink", help=argparse.SUPPRESS)  # run as the tunnel sink process
    args = parser.parse_args()
    # Children inherit the limit: raise the soft limit to the hard one (raising the hard one
    # needs privileges containers often lack).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.sink:
        return run_sink(args.sink)

    bench = Bench(tempfile.mkdtemp(prefix="meshfed-bench-"), args)
    print(f"configs and logs of this run: {bench.dir}", file=sys.stderr)
    try:
        report = bench.run()
    finally:
        bench.stop()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


class Bench:
    def __init__(self, dir, args):
        self.dir = dir
        self.args = args
        self.processes = {}

    # === setup ===

    def run(self):
        self.write_files()
        self.start("nginx", ["nginx", "-c", self.path("nginx.conf"), "-g", "daemon off;"])
        self.start("iperf3", ["iperf3", "-s", "-B", IPERF[0], "-p", str(IPERF[1])])
        self.start("sink", [sys.executable, __file__, "--sink", self.path("sink.count")])
        self.start_meshfed("west")
        self.start_meshfed("east")
        self.start("haproxy-b", ["haproxy", "-f", self.path("haproxy-b.cfg")])
        self.start("haproxy-a", ["haproxy", "-f", self.path("haproxy-a.cfg")])
        for path in HTTP:
            wait_http(HTTP[path])
        lines = [header(self)]
        for section in self.args.only or SECTIONS:
            lines += getattr(self, f"{section}_table")()
        return "\n".join(lines) + "\n"

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_files(self):
        write(self.path("nginx.conf"), NGINX_CONF.format(dir=self.dir, addr=f"{NGINX[0]}:{NGINX[1]}",
                                                  h2=f"{NGINX_H2[0]}:{NGINX_H2[1]}"))
        for cluster in ("east", "west"):
            subprocess.run(
                [MESHFED, "ca", "init", "--trust-domain", f"{cluster}.bench",
                 "--out", self.path(f"{cluster}/ca")],
                check=True, capture_output=True,
            )
        write(self.path("west.yaml"), WEST_YAML)
        write(self.path("east.yaml"), EAST_YAML.format(west="127.0.2.1:15443"))
        write(self.path("east-lossy.yaml"), EAST_YAML.format(west=f"{RELAY_AT[0]}:{RELAY_AT[1]}"))
        self.haproxy_certs()
        write(self.path("haproxy-a.cfg"), HAPROXY_A.format(dir=self.dir))
        write(self.path("haproxy-b.cfg"), HAPROXY_B.format(dir=self.dir))
        write(self.path("rate.lua"), RATE_LUA)

    def haproxy_certs(self):
        """A CA and a certificate for each HAProxy (key and chain in one PEM, as HAProxy takes)."""
        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.dir)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=bench CA")
        for name in ("a", "b"):
            openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                    "-subj", f"/CN={name}.bench")
            with open(self.path(f"{name}.ext"), "w") as f:
                f.write(f"subjectAltName=DNS:{name}.bench\n")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                    "-extfile", f"{name}.ext")
            with open(self.path(f"{name}.pem"), "w") as out:
                for part in (f"{name}.crt", f"{name}.key"):
                    with open(self.path(part)) as f:
                        out.write(f.read())

    def start_meshfed(self, cluster, config=None):
        env = dict(os.environ, MESHFED_LOG="warn")
        self.start(f"meshfed-{cluster}",
                   [MESHFED, "run", "--config", self.path(config or f"{cluster}.yaml")], env=env)

    def start(self, name, argv, env=None):
        log = open(self.path(f"{name}.log"), "w")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def restart(self, name, start):
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        start()

    def stop(self):
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    def gateways(self, path):
        return {
            "meshfed": ["meshfed-east", "meshfed-west"],
            "haproxy": ["haproxy-a", "haproxy-b"],
        }.get(path, [])

    def cpu(self, names):
        return {name: cpu_seconds(self.processes[name].pid) for name in names}

    # === measurements ===

    def http_table(self):
        rows = [
            "## Small requests (HTTP/1.1, wrk, 2 threads)",
            "",
            "| path | connections | requests/s | p50 | p99 | gateway CPU s per 100k requests |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for connections in (32, 256):
            for path in HTTP:
                run_wrk(HTTP[path], 32, 2)  # warm-up: pools, windows, caches
                gateways = self.gateways(path)
                before = self.cpu(gateways)
                result = run_wrk(HTTP[path], connections, self.args.duration)
                after = self.cpu(gateways)
                cpu = cpu_per_100k(before, after, result["requests"])
                rows.append(f"| {path} | {connections} | {result['rps']:,.0f} | "
                            f"{ms(result['p50'])} | {ms(result['p99'])} | {cpu} |")
        rows += ["", "## Small requests (HTTP/2 prior knowledge, h2load, 32 connections, 10 streams each)", "",
                 "| path | requests/s | mean latency | gateway CPU s per 100k requests |",
                 "| --- | --- | --- | --- |"]
        for path in HTTP:
            gateways = self.gateways(path)
            before = self.cpu(gateways)
            address = NGINX_H2 if path == "direct" else HTTP[path]
            result = run_h2load(address, 32, 10, self.args.duration)
            after = self.cpu(gateways)
            cpu = cpu_per_100k(before, after, result["requests"])
            rows.append(f"| {path} | {result['rps']:,.0f} | {ms(result['mean'])} | {cpu} |")
        return rows + [""]

    def fixed_rate_table(self):
        rows = [
            "## Added latency at a fixed rate (about 1,000 requests/s: wrk, 10 connections, one request each 10 ms)",
            "",
            "| path | requests/s | p50 | p99 | added p50 | added p99 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        base = None
        for path in HTTP:
            result = run_wrk(HTTP[path], 10, self.args.duration, rate_script=self.path("rate.lua"),
                             interval_ms=10, threads=1)
            if base is None:
                base = result
            rows.append(f"| {path} | {result['rps']:,.0f} | {ms(result['p50'])} | {ms(result['p99'])} | "
                        f"{ms(result['p50'] - base['p50'])} | {ms(result['p99'] - base['p99'])} |")
        return rows + [""]

    def bulk_table(self):
        rows = [
            "## Bulk TCP through the tunnel (iperf3, one stream, 8 s)",
            "",
            "| path | Gbit/s |",
            "| --- | --- |",
        ]
        for path, (host, port) in IPERF_AT.items():
            out = subprocess.run(["iperf3", "-c", host, "-p", str(port), "-t", "8", "-J"],
                                 capture_output=True, text=True, timeout=60)
            try:
                bits = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
                rows.append(f"| {path} | {bits / 1e9:.2f} |")
            except (KeyError, ValueError):
                rows.append(f"| {path} | failed: {out.stdout[-200:]!r} {out.stderr[-200:]!r} |")
        return rows + [""]

    def tunnels_table(self):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # HAProxy holds two sockets per tunnel in one process (client side and server side);
        # meshfed's first gateway holds one (the tunnels share its QUIC connection).
        counts = {"meshfed": self.args.tunnels,
                  "haproxy": min(self.args.tunnels, (hard - 1_000) // 2)}
        rows = [
            f"## Memory with {self.args.tunnels:,} open TCP tunnels",
            "",
            f"(Open files are limited to {hard:,} per process here: HAProxy gets as many tunnels as fit.)",
            "",
            "| path | tunnels open | gateways' RSS before | RSS with the tunnels | per tunnel |",
            "| --- | --- | --- | --- | --- |",
        ]
        for path, address in SINK_AT.items():
            gateways = self.gateways(path)
            before = sum(rss_bytes(self.processes[n].pid) for n in gateways)
            base = sink_count(self.path("sink.count"))
            sockets = open_tunnels(address, counts[path])
            deadline = time.time() + 120
            while sink_count(self.path("sink.count")) - base < len(sockets) and time.time() < deadline:
                time.sleep(0.2)
            opened = sink_count(self.path("sink.count")) - base
            time.sleep(1)
            after = sum(rss_bytes(self.processes[n].pid) for n in gateways)
            for s in sockets:
                s.close()
            per = (after - before) / max(opened, 1)
            rows.append(f"| {path} | {opened:,} | {before / 2**20:.0f} MiB | {after / 2**20:.0f} MiB | "
                        f"{per / 1024:.1f} KiB |")
            time.sleep(3)  # let the tunnels close before the next path
        return rows + [""]

    def lossy_table(self):
        """meshfed alone: the relay gives east's link to west 1 % loss each way and a 20 ms round trip."""
        self.start("relay", [RELAY, f"{RELAY_AT[0]}:{RELAY_AT[1]}", "127.0.2.1:15443", "0.01",
                             str(RTT_MS // 2)])
        self.restart("meshfed-east", lambda: self.start_meshfed("east", "east-lossy.yaml"))
        wait_http(HTTP["meshfed"])
        run_wrk(HTTP["meshfed"], 4, 2)
        result = run_wrk(HTTP["meshfed"], 10, max(self.args.duration, 20),
                         rate_script=self.path("rate.lua"), interval_ms=50, threads=1)
        return [
            f"## Lossy link: meshfed with 1 % loss each way and a {RTT_MS} ms round trip (about 200 requests/s)",
            "",
            "| requests/s | p50 | p99 | p99 in round trips |",
            "| --- | --- | --- | --- |",
            f"| {result['rps']:,.0f} | {ms(result['p50'])} | {ms(result['p99'])} | "
            f"{result['p99'] / (RTT_MS / 1000):.2f} |",
            "",
        ]


# === load generators and readings ===

def run_wrk(address, connections, duration, rate_script=None, interval_ms=None, threads=2):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "-H", f"Host: {SERVICE}"]
    env = dict(os.environ)
    if rate_script:
        argv += ["-s", rate_script]
        env["WRK_INTERVAL_MS"] = str(interval_ms)
    argv.append(f"http://{address[0]}:{address[1]}/")
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors against {address}:\n{out}")
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": seconds(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1)),
        "p99": seconds(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1)),
    }


def run_h2load(address, clients, streams, duration):
    out = subprocess.run(
        ["h2load", f"--clients={clients}", f"--max-concurrent-streams={streams}",
         f"--duration={duration}", "--warm-up-time=2", f"--header=:authority: {SERVICE}",
         f"http://{address[0]}:{address[1]}/"],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not done or done.group(1) != done.group(2):
        raise RuntimeError(f"h2load saw failures against {address}:\n{out}")
    return {
        "requests": int(done.group(2)),
        "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
        "mean": seconds(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)),
    }


def seconds(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def ms(value):
    return f"{value * 1000:.2f} ms"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_100k(before, after, requests):
    if not before:
        return "-"
    parts = [f"{name}: {(after[name] - before[name]) / requests * 100_000:.2f}" for name in before]
    return ", ".join(parts)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_tunnels(address, count):
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(True)
        s.connect(address)
        sockets.append(s)
    return sockets


def wait_http(address, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            request = urllib.request.Request(f"http://{address[0]}:{address[1]}/",
                                             headers={"Host": SERVICE})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers at {address}")


def header(bench):
    cpus = os.cpu_count()
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {
        "meshfed": subprocess.run([MESHFED, "--version"], capture_output=True, text=True).stdout.strip(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
    }
    return (f"# Benchmark run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"Machine: {cpus} CPUs ({model}). {versions['meshfed']}; {versions['haproxy']}; "
            f"{versions['nginx']}. Each load run: {bench.args.duration} s.\n")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run_sink(count_file):
    """The tunnels' far end: accepts connections on SINK and holds them open, writing how many
    it has accepted to `count_file`. A process of its own, for its own open-file limit."""
    accepted = 0

    async def hold(reader, writer):
        nonlocal accepted
        accepted += 1
        await reader.read()
        writer.close()

    async def serve():
        server = await asyncio.start_server(hold, *SINK, backlog=4096)
        async with server:
            while True:
                with open(count_file + ".tmp", "w") as f:
                    f.write(str(accepted))
                os.replace(count_file + ".tmp", count_file)
                await asyncio.sleep(0.1)

    asyncio.run(serve())


def sink_count(count_file):
    try:
        with open(count_file) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen {addr} reuseport backlog=4096;
        listen {h2} http2;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""

WEST_YAML = """
cluster: west
trust_domain: west.bench
listeners: { http: "127.0.2.1:15080", federation: "127.0.2.1:15443", dns: "127.0.2.1:15053", admin: "127.0.2.1:15000" }
identity: { ca_dir: west/ca }
peers:
  - { name: east, address: "127.0.1.1:15443", trust_domain: east.bench, bundle: east/ca/ca.pem }
exports:
  - { name: web, namespace: bench, ports: [{ port: 80, protocol: http }], endpoints: ["127.0.0.1:18080"], export_to: [east] }
  - { name: iperf, namespace: bench, ports: [{ port: 5201, protocol: tcp }], endpoints: ["127.0.0.1:15201"], export_to: [east] }
  - { name: sink, namespace: bench, ports: [{ port: 9000, protocol: tcp }], endpoints: ["127.0.0.1:19999"], export_to: [east] }
"""

EAST_YAML = """
cluster: east
trust_domain: east.bench
listeners: {{ http: "127.0.1.1:15080", federation: "127.0.1.1:15443", dns: "127.0.1.1:15053", admin: "127.0.1.1:15000" }}
identity: {{ ca_dir: east/ca }}
peers:
  - {{ name: west, address: "{west}", trust_domain: west.bench, bundle: west/ca/ca.pem }}
tcp_services:
  - {{ service: iperf.bench, port: 5201, listen: "127.0.1.1:15201" }}
  - {{ service: sink.bench, port: 9000, listen: "127.0.1.1:19000" }}
"""

# Both HAProxy instances: at most 9,500 connections, so that two sockets each fit the open-file
# limit of 20,000 that containers here cannot raise.
HAPROXY_COMMON = """
global
    maxconn 9500
    log stderr format short local0 warning
defaults
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
"""

HAPROXY_A = HAPROXY_COMMON + """frontend local
    mode http
    bind 127.0.3.1:15080
    default_backend peer
backend peer
    mode http
    http-reuse always
    server b 127.0.4.1:15443 ssl crt {dir}/a.pem ca-file {dir}/ca.pem verify required verifyhost b.bench alpn h2
listen iperf
    mode tcp
    bind 127.0.3.1:15201
    server b 127.0.4.1:15444 ssl crt {dir}/a.pem ca-file {dir}/ca.pem verify required verifyhost b.bench
listen sink
    mode tcp
    bind 127.0.3.1:19000
    server b 127.0.4.1:15445 ssl crt {dir}/a.pem ca-file {dir}/ca.pem verify required verifyhost b.bench
"""

HAPROXY_B = HAPROXY_COMMON + """frontend federation
    mode http
    bind 127.0.4.1:15443 ssl crt {dir}/b.pem ca-file {dir}/ca.pem verify required alpn h2
    default_backend nginx
backend nginx
    mode http
    http-reuse always
    server n 127.0.0.1:18080
listen iperf
    mode tcp
    bind 127.0.4.1:15444 ssl crt {dir}/b.pem ca-file {dir}/ca.pem verify required
    server i 127.0.0.1:15201
listen sink
    mode tcp
    bind 127.0.4.1:15445 ssl crt {dir}/b.pem ca-file {dir}/ca.pem verify required
    server s 127.0.0.1:19999
"""

RATE_LUA = """
-- Each connection waits WRK_INTERVAL_MS between requests: with c connections that is about
-- c * 1000 / interval requests a second, less what the latency itself adds.
local interval = tonumber(os.getenv("WRK_INTERVAL_MS"))
function delay()
    return interval
end
"""

if __name__ == "__main__":
    main()
