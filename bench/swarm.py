#!/usr/bin/env python3
"""The measuring half of bench/swarm.sh (see there for what is measured and how)."""

import argparse
import concurrent.futures
import importlib.util
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

# The site benchmark's client, port and shell helpers (bench/site.py; not `import site`,
# which is Python's own module).
_spec = importlib.util.spec_from_file_location(
    "bench_site", os.path.join(os.path.dirname(os.path.abspath(__file__)), "site.py"))
bench_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_site)
Api, free_port, sh = bench_site.Api, bench_site.free_port, bench_site.sh

NODES = ("n1", "n2", "n3")
REGISTRY = "10.77.0.254:5000"
NETWORK = "nbrt-sessions"
PEER = "nbrt-bench-by-hand"
PEER_PORT = 18888
PREFIX = "/user/bench/by-hand"
TOKEN = "0" * 48


class Site:
    """An `nbrt serve` of its own (database, port), stopped by `close`."""

    def __init__(self, a, name, extra):
        self.db = os.path.join(a.work, f"{name}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        port = free_port()
        self.proc = subprocess.Popen(
            [a.nbrt, "--store", a.store, "serve", "--listen", f"127.0.0.1:{port}",
             "--database", self.db, "--cull-idle-minutes", "0", "--json", *extra],
            stdout=subprocess.PIPE, stderr=open(os.path.join(a.work, f"{name}.log"), "w"),
            text=True)
        ready = json.loads(self.proc.stdout.readline())
        self.admin = Api(f"http://127.0.0.1:{port}", ready["adminToken"])
        self.site_id = sqlite3.connect(self.db).execute(
            "SELECT value FROM meta WHERE key = 'site_id'").fetchone()[0]

    def user(self, name):
        s, b = self.admin.call("POST", "/api/users", {"name": name, "role": "author"})
        assert s == 201, b
        return Api(self.admin.base, b["token"])

    def runtime(self, image, memory_mib):
        s, b = self.admin.call("POST", "/api/runtimes", {
            "name": f"bench {memory_mib}", "imageId": image, "maxCpu": 1,
            "maxMemory": memory_mib, "maxMemoryUnit": "m",
            "sharedMemory": 64, "sharedMemoryUnit": "m"})
        if s != 201:
            sys.exit(f"bench: registering: {s} {b}")
        return b["notebookRuntime"]["id"]

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(api, rt):
    s, b = api.call("POST", "/api/sessions", {"runtimeId": rt, "wait": True})
    if s not in (200, 202) or b["session"]["state"] != "ready":
        sys.exit(f"bench: a session did not start: {s} {b}")
    return b["session"]


def dk(lab, node, *args, check=True):
    return sh("docker", "-H", f"unix://{lab}/{node}/docker.sock", *args, check=check)


def node_of(lab, service):
    """The ID of the node running a service's task (the lab's nodes share one host name)."""
    task = dk(lab, "n1", "service", "ps", "-q", "--filter", "desired-state=running",
              service).split()[0]
    return dk(lab, "n1", "inspect", "--format", "{{.NodeID}}", task)[:12]


def main():
    ap = argparse.ArgumentParser()
    for a in ("--nbrt", "--store", "--image", "--work", "--out", "--lab"):
        ap.add_argument(a, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=20)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    helper = os.path.join(here, "swarm-peer.sh")
    manager = f"unix://{a.lab}/n1/docker.sock"
    load_before = os.getloadavg()[0]
    swarm = Site(a, "swarm", ["--backend", "swarm", "--engine", manager,
                              "--registry", REGISTRY, "--registry-insecure",
                              *sum((["--node-engine", f"unix://{a.lab}/{n}/docker.sock"]
                                    for n in NODES), [])])
    docker = Site(a, "docker", [])
    sites = (swarm, docker)
    try:
        rts = {site: site.runtime(a.image, 1024) for site in sites}
        users = {site: site.user("bench") for site in sites}
        # Warm-up: the image pushed to the registry and pulled on every node (one session per
        # node, by three users at once), loaded in the host's engine; the digest the swarm
        # site runs is the by-hand peer's image.
        warm = [swarm.user(f"warm{n}") for n in range(len(NODES))]
        with concurrent.futures.ThreadPoolExecutor(len(warm)) as pool:
            warmed = list(pool.map(lambda u: (u, start(u, rts[swarm])), warm))
        spec = json.loads(dk(a.lab, "n1", "service", "inspect", warmed[0][1]["containerId"]))
        pinned = spec[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        nodes = {node_of(a.lab, s["containerId"]) for _, s in warmed}
        print(f"warm-up: {pinned} on {sorted(nodes)}", file=sys.stderr)
        for u, s in warmed:
            u.call("DELETE", f"/api/sessions/{s['id']}")
        start(users[docker], rts[docker])

        # The three starts, hyperfine, a prepare that stops the last one.
        def curl_start(site):
            body = json.dumps({"runtimeId": rts[site], "wait": True})
            return (f"curl -sf -X POST -H 'Authorization: Bearer {users[site].token}' "
                    f"-H 'Content-Type: application/json' -d '{body}' "
                    f"{site.admin.base}/api/sessions | grep -q '\"state\":\"ready\"'")

        def curl_stop(site):
            return f"{helper} stop-sessions {a.lab} {site.admin.base} {users[site].token}"

        peer_env = {"LAB": a.lab, "IMAGE": pinned, "NAME": PEER, "PORT": str(PEER_PORT),
                    "PREFIX": PREFIX, "TOKEN": TOKEN, "NETWORK": NETWORK}
        env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in peer_env.items())
        export = os.path.join(a.work, "hyperfine.json")
        sh("hyperfine", "--runs", str(a.runs), "--export-json", export, "--style", "basic",
           "-n", "nbrt swarm", "--prepare", curl_stop(swarm), curl_start(swarm),
           "-n", "nbrt docker", "--prepare", curl_stop(docker), curl_start(docker),
           "-n", "docker service create", "--prepare", f"{env_prefix} {helper} peer-rm",
           f"{env_prefix} {helper} peer-start")
        subprocess.run(f"{env_prefix} {helper} peer-rm", shell=True, check=False)
        for site in sites:
            subprocess.run(curl_stop(site), shell=True, check=False)
        results = {r["command"]: r for r in json.load(open(export))["results"]}

        # 20 at once, across the nodes.
        many = [swarm.user(f"user{n:02}") for n in range(a.concurrent)]
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(many)) as pool:
            answers = list(pool.map(
                lambda u: u.call("POST", "/api/sessions", {"runtimeId": rts[swarm],
                                                           "wait": True}), many))
        all_ready = time.perf_counter() - t0
        ready = sum(1 for s, b in answers if s in (200, 202) and b["session"]["state"] == "ready")
        _, listed = swarm.admin.call("GET", "/api/sessions")
        listed_ready = sum(1 for s in listed["sessions"] if s["state"] == "ready")
        services = dk(a.lab, "n1", "service", "ls", "-q", "--filter",
                      f"label=io.nbrt.site={swarm.site_id}").split()
        spread = {}
        for sid in services:
            node = node_of(a.lab, sid)
            spread[node] = spread.get(node, 0) + 1
        failed = [b for s, b in answers if not (s in (200, 202)
                                                and b["session"]["state"] == "ready")]
        for u, (s, b) in zip(many, answers):
            if s in (200, 202):
                u.call("DELETE", f"/api/sessions/{b['session']['id']}")
    finally:
        for site in sites:
            site.close()
        subprocess.run(f"{helper} cleanup {a.lab} {swarm.site_id} {docker.site_id}",
                       shell=True, check=False)

    load_after = os.getloadavg()[0]
    med = {k: r["median"] for k, r in results.items()}
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    lines = [
        f"# Swarm backend benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {bench_site.machine()}. "
        f"The lab of `scripts/swarm-lab up`: three engines in network namespaces on this one "
        f"machine (they share its CPUs), the site registry at {REGISTRY}. One run of "
        f"`bench/swarm.sh` (RUNS={a.runs}); nbrt binary `{os.path.relpath(a.nbrt)}`.",
        f"Load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end "
        "(other work on the machine shows in the spread).",
        f"Image: the stock jupyter stack built by nbrt, `{a.image[:19]}…`; on every node and in "
        "the host's engine before timing (warm-up).",
        "",
        "## Session start to ready",
        "",
        "hyperfine, a `--prepare` stopping the previous session (not timed). nbrt: `curl` "
        "`POST /api/sessions {\"wait\": true}` until it answers with a ready session; the "
        "runtime has 1 CPU, 1 GiB, 64 MiB shm. by hand: `docker service create` of the image "
        "by digest with the same limits and reservations, restart none, dnsrr, the port "
        "published in host mode, a home volume, shm tmpfs, the notebook environment; then "
        "GET `<prefix>/api` on the three nodes every 10 ms until one answers 200 "
        "(`bench/swarm-peer.sh`).",
        "",
        "| | median (s) | min (s) | runs (s) |",
        "|---|---:|---:|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median']:.2f} | {r['min']:.2f} | {fmt(r['times'])} |")
    lines += [
        "",
        f"**Ratios (medians): swarm backend / docker backend "
        f"{med['nbrt swarm'] / med['nbrt docker']:.2f}; swarm backend / docker service create "
        f"by hand {med['nbrt swarm'] / med['docker service create']:.2f}.**",
        "",
        f"## {a.concurrent} sessions at once",
        "",
        f"{a.concurrent} users each `POST /api/sessions {{\"wait\": true}}` to the swarm site "
        "at the same moment (one thread each); timed until the last answered.",
        "",
        f"- time to all ready: **{all_ready:.1f} s**",
        f"- answered ready: {ready} of {a.concurrent}; the site lists {listed_ready} ready; "
        f"{len(services)} services on the swarm (lost: {a.concurrent - ready})",
        f"- spread over the nodes: " + ", ".join(f"{n}: {c}" for n, c in sorted(spread.items())),
        "",
    ]
    if failed:
        lines += ["Failures:", ""] + [f"- `{json.dumps(b)[:300]}`" for b in failed] + [""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
