#!/usr/bin/env python3
"""Turn the hyperfine JSON files of a benchmark run into a Markdown table with ratios."""
import json
import os
import platform
import sys

work, image_bytes, export_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mb = image_bytes / 1e6


def load(name):
    with open(os.path.join(work, name + ".json")) as f:
        return {r["command"]: r for r in json.load(f)["results"]}


def median(r):
    return r["median"]


print(f"# Image core benchmark\n")
print(f"Machine: {os.cpu_count()} cores, {platform.machine()}, kernel {platform.release()}. "
      f"Image: {mb:.0f} MB uncompressed (docker save size); nbrt's export is {export_bytes/1e6:.0f} MB "
      "(layers kept gzip-compressed as stored). Times are hyperfine medians.\n")
base = load("baseline")
print("| reference | median s | MB/s over the image |")
print("|---|---|---|")
for cmd, r in base.items():
    print(f"| {cmd} | {median(r):.2f} | {mb / median(r):.0f} |")
print()
print("| operation | peer | peer s | nbrt | nbrt s | speed-up (peer/nbrt) |")
print("|---|---|---|---|---|---|")
pairs = [
    ("export", "docker save", "nbrt export"),
    ("export", "docker save", "nbrt export --format docker-archive"),
    ("import", "docker load", "nbrt import"),
    ("push", "skopeo copy", "nbrt push"),
]
for file, peer, ours in pairs:
    res = load(file)
    if peer in res and ours in res:
        p, o = median(res[peer]), median(res[ours])
        print(f"| {file} | {peer} | {p:.2f} | {ours} | {o:.2f} | {p / o:.2f}x |")
