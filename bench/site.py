#!/usr/bin/env python3
"""The measuring half of bench/site.sh (see there for what is measured and how)."""

import argparse
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

PEER_LABEL = "org.nbrt.bench=site"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base, token):
        self.base, self.token = base, token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout.strip()


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
        return None


def gone(container):
    for _ in range(300):
        if subprocess.run(["docker", "inspect", container], capture_output=True).returncode != 0:
            return
        time.sleep(0.1)


def nbrt_start(api, runtime_id):
    t0 = time.perf_counter()
    status, body = api.call("POST", "/api/sessions", {"runtimeId": runtime_id, "wait": True})
    t1 = time.perf_counter()
    s = body["session"]
    if status not in (200, 202) or s["state"] != "ready":
        sys.exit(f"bench: session did not start: {status} {body}")
    api.call("DELETE", f"/api/sessions/{s['id']}")
    gone(s["containerId"])
    return t1 - t0


def wait_warm(api, runtime_id, n):
    """Until the runtime's warm pool has `n` ready sessions (the refill is not timed)."""
    for _ in range(3000):
        status, body = api.call("GET", f"/api/runtimes/{runtime_id}")
        if status == 200 and body.get("warmReady") == n:
            return
        time.sleep(0.1)
    sys.exit(f"bench: the warm pool did not fill: {body}")


def warm_start(api, runtime_id):
    wait_warm(api, runtime_id, 2)
    return nbrt_start(api, runtime_id)


def docker_start(image, limits, n):
    name = f"nbrt-bench-site-{os.getpid()}-{n}"
    prefix = "/user/bench/peer"
    t0 = time.perf_counter()
    sh("docker", "run", "-d", "--name", name, "--label", PEER_LABEL,
       "--cpus", str(limits["cpus"]), "--memory", limits["memory"],
       "--memory-swap", limits["swap"], "--shm-size", limits["shm"],
       "--security-opt", "no-new-privileges:true",
       "-v", "nbrt-bench-site-home:/home/jovyan",
       "-e", f"NB_PREFIX={prefix}", "-e", "JUPYTER_TOKEN=" + "0" * 48,
       "-e", "JUPYTER_PORT=8888", "-e", "NBRT_AUTH=token", image)
    ip = sh("docker", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name)
    url = f"http://{ip}:8888{prefix}/api"
    while http_status(url) != 200:
        time.sleep(0.01)
    t1 = time.perf_counter()
    sh("docker", "rm", "-f", name)
    return t1 - t0


def machine():
    """`2 CPUs (model), 23 GiB RAM, Docker 20.10.24`: the machine a result was measured on."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    version = sh("docker", "info", "--format", "{{.ServerVersion}}")
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB RAM, Docker {version}"


def wrk(url, token, seconds, connections):
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    out = sh(*args, url)
    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50": pct(50), "p99": pct(99), "rps": rps,
            "non2xx": int(errors.group(1)) if errors else 0}


def main():
    ap = argparse.ArgumentParser()
    for a in ("--nbrt", "--store", "--image", "--work", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--image-note", default="the stock jupyter stack built by nbrt")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--wrk-connections", type=int, default=8)
    ap.add_argument("--runtimes", type=int, default=1000)
    ap.add_argument("--session-records", type=int, default=200)
    a = ap.parse_args()

    load_before = os.getloadavg()[0]
    db = os.path.join(a.work, "site.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    port = free_port()
    server = subprocess.Popen(
        [a.nbrt, "--store", a.store, "serve", "--listen", f"127.0.0.1:{port}",
         "--database", db, "--cull-idle-minutes", "0", "--json"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(a.work, "serve.log"), "w"), text=True)
    try:
        ready = json.loads(server.stdout.readline())
        api = Api(f"http://127.0.0.1:{port}", ready["adminToken"])
        limits = {"cpus": 2, "memory": "4g", "swap": "8g", "shm": "1g"}
        status, body = api.call("POST", "/api/runtimes", {
            "name": "bench jupyter", "imageId": a.image, "maxCpu": limits["cpus"],
            "maxMemory": 4, "maxMemoryUnit": "g", "sharedMemory": 1, "sharedMemoryUnit": "g"})
        if status != 201:
            sys.exit(f"bench: registering: {status} {body}")
        rt = body["notebookRuntime"]["id"]
        status, body = api.call("POST", "/api/runtimes", {
            "name": "bench jupyter warm", "imageId": a.image, "maxCpu": limits["cpus"],
            "maxMemory": 4, "maxMemoryUnit": "g", "sharedMemory": 1, "sharedMemoryUnit": "g",
            "warmPool": 2})
        if status != 201:
            sys.exit(f"bench: registering the warm runtime: {status} {body}")
        warm_rt = body["notebookRuntime"]["id"]

        # Session start (cold container, warm pool) vs docker run, the order rotating, after
        # one warm-up of each.
        nbrt_start(api, rt)
        docker_start(a.image, limits, "warm")
        warm_start(api, warm_rt)
        nbrt_t, docker_t, warm_t = [], [], []
        starts = [
            lambda i: nbrt_t.append(nbrt_start(api, rt)),
            lambda i: docker_t.append(docker_start(a.image, limits, i)),
            lambda i: warm_t.append(warm_start(api, warm_rt)),
        ]
        for i in range(a.runs):
            for k in range(3):
                starts[(i + k) % 3](i)
            print(f"run {i + 1}: nbrt {nbrt_t[-1]:.3f} s, docker run {docker_t[-1]:.3f} s, "
                  f"warm pool {warm_t[-1]:.3f} s", file=sys.stderr)
        # The pool's members stop being started in the background for the latency part.
        api.call("PATCH", f"/api/runtimes/{warm_rt}", {"warmPool": 0})

        # API latency: --runtimes runtimes, --session-records session records (the ended ones
        # of the timing above, topped up with copies of one written into the database), two
        # users with a running session each.
        t0 = time.monotonic()
        for n in range(a.runtimes - 1):
            s, b = api.call("POST", "/api/runtimes", {
                "name": f"bench {n}", "imageId": a.image, "maxCpu": 1,
                "maxMemory": 2, "maxMemoryUnit": "g"})
            assert s == 201, b
        register_s = time.monotonic() - t0
        print(f"registered {a.runtimes - 1} runtimes in {register_s:.1f} s", file=sys.stderr)
        con = sqlite3.connect(db, timeout=30)
        user_id, runtime_id, token, t = con.execute(
            "SELECT user_id, runtime_id, token, created_at FROM sessions "
            "WHERE ended_at IS NOT NULL LIMIT 1").fetchone()
        have = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
        with con:
            for i in range(max(0, a.session_records - 2 - have)):
                con.execute(
                    "INSERT INTO sessions (id, user_id, runtime_id, container_name, token, state, "
                    "message, created_at, ready_at, ended_at) VALUES (?, ?, ?, ?, ?, 'stopped', "
                    "'bench record', ?, ?, ?)",
                    (str(uuid.uuid4()), user_id, runtime_id, f"nbrt-bench-record-{i}", token,
                     t, t, t))
        con.close()
        sessions = []
        lat = {}
        records = a.session_records
        for path, token in (("/api/health", None), ("/api/runtimes", api.token),
                            ("/api/sessions", api.token), ("/api/sessions?all=true", api.token)):
            lat[path] = wrk(api.base + path, token, a.wrk_seconds, a.wrk_connections)
            print(f"{path}: {lat[path]}", file=sys.stderr)
        for u, s in sessions:
            u.call("DELETE", f"/api/sessions/{s['id']}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        ids = sh("docker", "ps", "-aq", "--filter", f"label={PEER_LABEL}", check=False).split()
        if ids:
            sh("docker", "rm", "-f", *ids, check=False)
        # The site's home volumes and the peer's.
        site_id = sqlite3.connect(db).execute(
            "SELECT value FROM meta WHERE key = 'site_id'").fetchone()[0]
        vols = sh("docker", "volume", "ls", "-q", "--filter", f"label=org.nbrt.site={site_id}",
                  check=False).split()
        sh("docker", "volume", "rm", "-f", *vols, "nbrt-bench-site-home", check=False)

    load_after = os.getloadavg()[0]
    med_n, med_d = statistics.median(nbrt_t), statistics.median(docker_t)
    med_w = statistics.median(warm_t)
    ratio = med_n / med_d
    warm_ratio = med_d / med_w
    fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
    lines = [
        f"# nbrt serve benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {machine()}, loopback. One run of `bench/site.sh` (RUNS={a.runs}); nbrt binary "
        f"`{os.path.relpath(a.nbrt)}`.",
        f"Load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end: "
        "anything else running on the machine shows up in the spread of the runs.",
        f"Image: {a.image_note}, `{a.image[:19]}…`, in Docker before timing.",
        "",
        "## Session start to ready",
        "",
        "nbrt: `POST /api/sessions {\"wait\": true}` until it answers with a ready session "
        "(create container with limits/labels/volume/token, start, `<prefix>/api` answered). "
        "docker: `docker run -d` with the same limits (`--cpus 2 --memory 4g --memory-swap 8g "
        "--shm-size 1g`), environment and a named home volume, `docker inspect` for the IP, "
        "then GET `<prefix>/api` every 10 ms until the first 200. Order alternates; one warm-up "
        "of each is discarded. Warm pool: the same runtime with `warmPool: 2`; before each "
        "timed start the bench waits (untimed) until both members are ready, then times the "
        "same `POST /api/sessions` (a member taken, the user's home volume mounted into it). "
        "The two idle members run during the other starts.",
        "",
        "| | median (s) | min (s) | runs (s) |",
        "|---|---:|---:|---|",
        f"| nbrt serve session, cold container | {med_n:.3f} | {min(nbrt_t):.3f} | {fmt(nbrt_t)} |",
        f"| nbrt serve session, warm pool | {med_w:.3f} | {min(warm_t):.3f} | {fmt(warm_t)} |",
        f"| plain docker run | {med_d:.3f} | {min(docker_t):.3f} | {fmt(docker_t)} |",
        "",
        f"**Ratio nbrt cold / docker run (medians): {ratio:.3f}** (target ≤ 1.1: "
        f"{'met' if ratio <= 1.1 else 'NOT met'}).",
        "",
        f"**Warm pool: {med_w:.3f} s, {warm_ratio:.0f}x faster than docker run (medians)** "
        f"(target < 0.5 s and ≥ 3x: {'met' if med_w < 0.5 and warm_ratio >= 3 else 'NOT met'}).",
        "",
        "## API latency under wrk",
        "",
        f"`wrk -t1 -c{a.wrk_connections} -d{a.wrk_seconds}s --latency` on loopback, with the "
        f"admin's bearer token; {a.runtimes} runtimes registered (taking {register_s:.1f} s "
        f"through the API), {records} session records of which 2 running "
        "(`/api/sessions` lists the running ones, `?all=true` every record). wrk and the "
        "server share the machine's CPUs.",
        "",
        "| endpoint | p50 (ms) | p99 (ms) | requests/s | non-2xx |",
        "|---|---:|---:|---:|---:|",
    ]
    for path, r in lat.items():
        lines.append(f"| GET {path} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['non2xx']} |")
    lines += ["", "`/api/health` needs no token and reads one row: the floor of the HTTP stack.", ""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
