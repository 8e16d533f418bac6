#!/usr/bin/env python3
"""ncu_stalls.py SRC.csv[.gz] [TOP] — reduce Nsight Compute's source page (`ncu --import R --page source --csv
--print-source sass`, bench/gpu_ncu_source.sh) to where a kernel's warps wait: samples by opcode, then the TOP
SASS instructions by warp-stall samples with the stall columns that are non-zero for them. Column names vary
between Nsight versions, so they are matched loosely ("Samples", "stall")."""
import collections
import csv
import gzip
import io
import re
import sys

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
raw = (gzip.open(path, "rt", errors="replace") if path.endswith(".gz") else open(path, errors="replace")).read()
lines = raw.splitlines()
start = next((i for i, l in enumerate(lines) if "Source" in l and ("Address" in l or "Samples" in l)), None)
if start is None:
    sys.exit("ncu_stalls.py: no source table header in " + path + "\n" + "\n".join(lines[:5]))
rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
cols = list(rows[0].keys()) if rows else []


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except ValueError:
        return 0.0


allc = next((c for c in cols if "All Samples" in c), None) or next((c for c in cols if "Samples" in c), None)
nic = next((c for c in cols if "Not-issued" in c or "Not Issued" in c), None)
exe = next((c for c in cols if c.strip() == "Instructions Executed"), None)
stall = [c for c in cols if "stall" in c.lower() and c not in (allc, nic)]
if not allc:
    sys.exit("ncu_stalls.py: no sample column; columns: " + ", ".join(cols))
total = sum(num(r[allc]) for r in rows) or 1.0
print(f"{path}: {len(rows)} instructions, {total:.0f} samples ({allc})")
by_op = collections.defaultdict(lambda: [0.0, 0.0, 0])
for r in rows:
    src = r.get("Source", "")
    op = re.sub(r"^@!?U?P\w+\s+", "", src.strip()).split(" ")[0] if src else "?"
    by_op[op][0] += num(r[allc])
    by_op[op][1] += num(r[exe]) if exe else 0
    by_op[op][2] += 1
print("\nsamples by opcode (share of samples, instructions executed, static count)")
for op, (s, e, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:25]:
    print(f"  {100 * s / total:5.1f}%  {e:12.0f}  {n:4d}  {op}")
if stall:
    agg = {c: sum(num(r[c]) for r in rows) for c in stall}
    print("\nstall columns summed over the kernel")
    for c, v in sorted(agg.items(), key=lambda kv: -kv[1])[:20]:
        if v:
            print(f"  {v:12.0f}  {c}")
print(f"\ntop {top} instructions by samples")
for r in sorted(rows, key=lambda r: -num(r[allc]))[:top]:
    extra = ", ".join(f"{c.split('(')[0].strip()}={num(r[c]):.0f}" for c in stall if num(r[c]) > 0.05 * num(r[allc]))
    addr = r.get("# Address", r.get("Address", ""))
    print(f"  {100 * num(r[allc]) / total:5.2f}%  {addr:>6}  {r.get('Source', '')[:70]:70s}  {extra}")
