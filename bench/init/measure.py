#!/usr/bin/env python3
"""Bench driver: nbrt-init vs tini + shell start scripts, in one run, on one machine.

1. init overhead inside a container (no Docker in the loop): N runs each of
   `nbrt-init true` and `tini -g -- start.sh true` as uid 1000, timed with perf_counter.
2. end to end: `docker run -d` of the Jupyter image until GET /api answers 200, for both
   images, alternating, R rounds; plus nbrt-init's own start time (NBRT_INIT_TIMING=1).
Prints medians and ratios; writes JSON to bench/results/ when asked.
"""
import json, os, re, socket, statistics, subprocess, sys, time, urllib.request

nbrt_img, shell_img = sys.argv[1], sys.argv[2]
rounds = int(os.environ.get("ROUNDS", "10"))
n_local = int(os.environ.get("LOCAL_RUNS", "100"))


def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, text=True, **kw).stdout.strip()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# 1. In-container loop.
inner = r"""
import subprocess, time, statistics, json, os
env = dict(os.environ)
def t(cmd, n):
    out = []
    for _ in range(n):
        a = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        out.append((time.perf_counter() - a) * 1000)
    return out
n = int(os.environ["N"])
t(["/bin/true"], 5)
res = {}
for _ in range(2):  # interleave, two halves
    for k, cmd in (("true", ["/bin/true"]), ("nbrt-init", ["nbrt-init", "true"]), ("tini+start.sh", ["tini", "-g", "--", "start.sh", "true"])):
        res.setdefault(k, []).extend(t(cmd, n // 2))
print(json.dumps(res))
"""
cid = sh("docker", "run", "-d", "--entrypoint", "sleep", shell_img, "600")
try:
    local = json.loads(sh("docker", "exec", "-e", f"N={n_local}", cid, "python3", "-c", inner))
finally:
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


# 2. End to end.
def start_to_api(image, extra_env=()):
    port = free_port()
    name = f"nbrt-bench-{os.getpid()}-{port}"
    args = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8888"]
    for e in extra_env:
        args += ["-e", e]
    t0 = time.perf_counter()
    subprocess.run(args + [image], check=True, capture_output=True)
    url = f"http://127.0.0.1:{port}/api"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"{image}: no answer from {url}")
        time.sleep(0.01)
    ms = (time.perf_counter() - t0) * 1000
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    own = re.search(r"nbrt-init prepared the start in ([0-9.]+) ms", logs)
    return ms, float(own.group(1)) if own else None


start_to_api(nbrt_img)  # warm the page cache for both
start_to_api(shell_img)
e2e = {"nbrt-init": [], "tini+start.sh": []}
own = []
for i in range(rounds):
    order = [("nbrt-init", nbrt_img), ("tini+start.sh", shell_img)]
    if i % 2:
        order.reverse()
    for k, img in order:
        ms, o = start_to_api(img, ["NBRT_INIT_TIMING=1"])
        e2e[k].append(ms)
        if o is not None:
            own.append(o)

med = lambda v: statistics.median(v)
result = {
    "machine": {"cpus": os.cpu_count()},
    "in_container_ms_median": {k: round(med(v), 2) for k, v in local.items()},
    "in_container_runs": n_local,
    "end_to_end_ms_median": {k: round(med(v), 1) for k, v in e2e.items()},
    "end_to_end_ms_all": {k: [round(x, 1) for x in v] for k, v in e2e.items()},
    "rounds": rounds,
    "nbrt_init_own_ms_median": round(med(own), 2) if own else None,
}
b = result["in_container_ms_median"]
print(f"in container, median of {n_local} runs each (ms): true {b['true']}, "
      f"nbrt-init true {b['nbrt-init']}, tini -g -- start.sh true {b['tini+start.sh']}")
print(f"  init overhead over /bin/true: nbrt-init {b['nbrt-init'] - b['true']:.2f} ms, "
      f"tini+start.sh {b['tini+start.sh'] - b['true']:.2f} ms")
e = result["end_to_end_ms_median"]
print(f"docker run -> GET /api 200, median of {rounds} (ms): nbrt-init {e['nbrt-init']}, "
      f"tini+start.sh {e['tini+start.sh']}, ratio nbrt/shell {e['nbrt-init'] / e['tini+start.sh']:.3f}")
print(f"nbrt-init's own start (NBRT_INIT_TIMING, median): {result['nbrt_init_own_ms_median']} ms")
out = os.environ.get("RESULT_JSON")
if out:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
