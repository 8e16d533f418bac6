#!/usr/bin/env python3
"""pipes_table.py CSV | --metrics — the table of bench/gpu_pipes.sh: Nsight Compute's per-launch metrics (ncu --csv, one row per
launch and metric) averaged per kernel: time, SM clock, instructions, how busy each pipe was (% of its peak while
the SM was active), shared-memory wavefronts, occupancy and DRAM throughput. --metrics prints the metric names."""
import csv
import re
import sys
from collections import defaultdict

COLS = [  # (metric, header, scale, format)
    ("gpu__time_duration.sum", "us", 1e-3, "%.1f"),
    ("sm__cycles_elapsed.avg.per_second", "GHz", 1e-9, "%.2f"),
    ("smsp__inst_executed.sum", "Minst", 1e-6, "%.2f"),
    ("sm__inst_executed.avg.per_cycle_active", "IPC", 1, "%.2f"),
    ("sm__inst_executed_pipe_tensor_op_hmma.sum", "kHMMA", 1e-3, "%.0f"),
    ("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active", "tensor%", 1, "%.0f"),
    ("sm__inst_executed_pipe_xu.sum", "kXU", 1e-3, "%.0f"),
    ("sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active", "xu%", 1, "%.0f"),
    ("sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active", "fma%", 1, "%.0f"),
    ("sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active", "alu%", 1, "%.0f"),
    ("sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active", "lsu%", 1, "%.0f"),
    ("sm__inst_executed_pipe_uniform.avg.pct_of_peak_sustained_active", "uni%", 1, "%.0f"),
    ("l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed", "smem%", 1, "%.0f"),
    ("sm__warps_active.avg.pct_of_peak_sustained_active", "occ%", 1, "%.0f"),
    ("smsp__warps_eligible.avg.per_cycle_active", "elig", 1, "%.2f"),
    ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram%", 1, "%.0f"),
    ("dram__bytes_read.sum", "rdMB", 1e-6, "%.1f"),
    ("dram__bytes_write.sum", "wrMB", 1e-6, "%.1f"),
]


def num(s):
    s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


def main():
    if sys.argv[1] == "--metrics":  # the list bench/gpu_pipes.sh asks Nsight Compute for
        print(" ".join(c[0] for c in COLS))
        return
    rows = list(csv.DictReader(open(sys.argv[1])))
    # value per (launch id, metric); kernel name per launch
    val = defaultdict(dict)
    name = {}
    for r in rows:
        lid = r["ID"]
        k = re.sub(r"\(.*", "", r["Kernel Name"]).replace("void ", "")
        k = re.sub(r"<.*", "", k)
        name[lid] = k
        v = num(r["Metric Value"])
        if v is not None:
            unit = r.get("Metric Unit", "")
            if unit == "msecond":
                v *= 1e6
            elif unit == "usecond":
                v *= 1e3
            elif unit in ("Kbyte", "KB"):
                v *= 1e3
            elif unit in ("Mbyte", "MB"):
                v *= 1e6
            elif unit in ("Gbyte", "GB"):
                v *= 1e9
            elif unit == "cycle/usecond":
                v *= 1e6
            elif unit == "cycle/nsecond":
                v *= 1e9
            elif unit == "Ghz":
                v *= 1e9
            elif unit == "Mhz":
                v *= 1e6
            val[lid][r["Metric Name"]] = v
    per = defaultdict(list)
    for lid, k in name.items():
        per[k].append(val[lid])
    hdr = ["kernel", "n"] + [c[1] for c in COLS]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    order = sorted(per, key=lambda k: -sum(d.get("gpu__time_duration.sum", 0) for d in per[k]))
    for k in order:
        ds = per[k]
        out = [k, str(len(ds))]
        for m, _, sc, fmt in COLS:
            xs = [d[m] for d in ds if m in d]
            out.append(fmt % (sc * sum(xs) / len(xs)) if xs else "-")
        print("| " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
