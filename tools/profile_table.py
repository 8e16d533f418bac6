#!/usr/bin/env python3
"""profile_table.py CSV TAG — reduce Nsight Compute's per-kernel gpu__time_duration (ncu --csv --print-units base)
of a few whole forwards to a table per kernel: time per forward, share, launches per forward, time per launch.
The head kernel runs once per forward, so its launch count is the number of forwards profiled."""
import collections
import csv
import re
import sys

path, tag = sys.argv[1:3]
lines = [line for line in open(path) if line.startswith('"')]
scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3}
tot = collections.defaultdict(float)
cnt = collections.Counter()
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = re.sub(r"^void ", "", re.sub(r"\(.*", "", r["Kernel Name"]))
    tot[name] += float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], 1e-6)
    cnt[name] += 1
heads = [cnt[k] for k in cnt if k.startswith("head")]
fw = heads[0] if heads else 1
total = sum(tot.values())
print(f"== {tag}: {fw} forwards profiled; kernel time per forward {total / fw:.3f} ms (serialised, no launch gaps)")
print(f"{'ms/fwd':>8} {'share':>6} {'per fwd':>7} {'us each':>8}  kernel")
for k in sorted(tot, key=tot.get, reverse=True):
    print(f"{tot[k] / fw:8.3f} {100 * tot[k] / total:5.1f}% {cnt[k] / fw:7.1f} {1e3 * tot[k] / cnt[k]:8.2f}  {k[:100]}")
