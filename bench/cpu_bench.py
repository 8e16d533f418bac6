#!/usr/bin/env python3
"""cpu_bench.py — PyTorch eager fp32 vs elansr's CPU backend, same thread count, same inputs (issue 5).

Why it is shaped this way: the two implementations run in two persistent worker processes (one imports
torch, the other only numpy + ctypes), so neither's OpenMP thread pool spins while the other is timed and
neither library's allocator state leaks into the other. The parent drives them alternately, one run at a
time (A B A B ...), so a burst of load from other users of the machine hits both. Each case gets warm-up
runs, then the median of --reps timed runs. Peak memory is measured separately: one fresh child process per
(implementation, case) that loads the model, runs the case once and reports ru_maxrss, both in total and
above its level just before the run (the torch import alone is a few hundred MB of RSS).

Inputs: random crops (fixed seed) of a real image (Set5 baby's HR, 512x512) at 64, 128, 256, and the five Set5
LR x4 images whole. Output: a markdown table (--md) and JSON (--json).
  python3 bench/cpu_bench.py --threads 1,2 --lib build/libelansr.so
"""
import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def load_cases(shared, sizes):
    from PIL import Image
    cases = []
    hr = np.array(Image.open(os.path.join(shared, "data/Set5/HR/baby.png")).convert("RGB"))
    rng = np.random.default_rng(5)
    for s in sizes:
        y = int(rng.integers(0, hr.shape[0] - s + 1))
        x = int(rng.integers(0, hr.shape[1] - s + 1))
        cases.append((f"crop {s}x{s}", hr[y:y + s, x:x + s]))
    lr_dir = os.path.join(shared, "data/Set5/LR_x4")
    for f in sorted(os.listdir(lr_dir)):
        im = np.array(Image.open(os.path.join(lr_dir, f)).convert("RGB"))
        cases.append((f"Set5 {os.path.splitext(f)[0]} {im.shape[1]}x{im.shape[0]}", im))
    return [(n, np.ascontiguousarray(im.transpose(2, 0, 1)[None].astype(np.float32))) for n, im in cases]


class Params(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("n_threads", ctypes.c_int), ("precision", ctypes.c_int),
                ("tile", ctypes.c_int), ("verbose", ctypes.c_int)]


def make_runner(impl, model, lib, threads):
    """Returns f(x) -> output for x (1,3,h,w float32)."""
    if impl == "torch":
        import torch
        from elan_torch import ELAN, load_state_dict
        torch.set_num_threads(threads)
        net = ELAN(load_state_dict(model)).eval()

        def f(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()
        return f
    L = ctypes.CDLL(lib)
    L.elansr_default_params.restype = Params
    L.elansr_last_error.restype = ctypes.c_char_p
    p = L.elansr_default_params()
    p.device, p.n_threads, p.precision = -1, threads, 1
    ctx = ctypes.c_void_p()
    if L.elansr_init(model.encode(), ctypes.byref(p), ctypes.byref(ctx)) != 0:
        raise RuntimeError(L.elansr_last_error().decode())

    def g(x):
        n, _, h, w = x.shape
        out = np.empty((n, 3, h * 4, w * 4), np.float32)
        if L.elansr_upscale_f32(ctx, x.ctypes.data_as(ctypes.c_void_p), n, h, w,
                                out.ctypes.data_as(ctypes.c_void_p)) != 0:
            raise RuntimeError(L.elansr_last_error().decode())
        return out
    return g


def worker(a):
    """Timing worker: reads 'case_index' lines, answers with the ms of one run (JSON); 'out i' saves the output."""
    cases = load_cases(a.shared, a.sizes)
    f = make_runner(a.worker, a.model, a.lib, a.t)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "out":
            np.save(cmd[2], f(cases[int(cmd[1])][1]))
            print("{}", flush=True)
            continue
        x = cases[int(cmd[0])][1]
        t0 = time.perf_counter()
        f(x)
        print(json.dumps({"ms": (time.perf_counter() - t0) * 1e3}), flush=True)


def vm_hwm_kb():
    """Peak RSS of this process's address space. Not ru_maxrss: on Linux that survives execve, so a child
    started by a parent that holds large outputs would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(a):
    cases = load_cases(a.shared, a.sizes)
    f = make_runner(a.mem, a.model, a.lib, a.t)
    x = cases[a.case][1]
    base = vm_hwm_kb()
    f(x)
    peak = vm_hwm_kb()
    print(json.dumps({"peak_mb": peak / 1024, "delta_mb": (peak - base) / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--lib", default=os.path.join(ROOT, "build/libelansr.so"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--mem-only", action="store_true", help="only the peak-memory children (prints, no files)")
    ap.add_argument("--md", default=os.path.join(ROOT, "docs/perf_cpu_table.md"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/perf_cpu.json"))
    ap.add_argument("--worker", choices=["torch", "elansr"], help=argparse.SUPPRESS)
    ap.add_argument("--mem", choices=["torch", "elansr"], help=argparse.SUPPRESS)
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--t", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.sizes = [int(s) for s in str(a.sizes).split(",") if s]
    a.model = a.model or os.path.join(a.shared, "models/elan-light-x4.pth")
    if a.worker:
        return worker(a)
    if a.mem:
        return memory_child(a)

    threads = [int(t) for t in a.threads.split(",")]
    names = [n for n, _ in load_cases(a.shared, a.sizes)]
    common = [sys.executable, os.path.abspath(__file__), "--lib", a.lib, "--model", a.model, "--shared", a.shared,
              "--sizes", ",".join(map(str, a.sizes))]
    env = dict(os.environ)
    if a.mem_only:
        for T in threads:
            for i, name in enumerate(names):
                row = []
                for impl in ("torch", "elansr"):
                    o = subprocess.run(common + ["--mem", impl, "--t", str(T), "--case", str(i)],
                                       env=dict(env, OMP_NUM_THREADS=str(T)), capture_output=True, text=True,
                                       check=True).stdout
                    m = json.loads(o.strip().splitlines()[-1])
                    row.append(f"{impl} {m['peak_mb']:.0f} (+{m['delta_mb']:.0f})")
                print(f"T={T} {name:24s} peak MB " + "  ".join(row), flush=True)
        return
    results = []
    for T in threads:
        env_t = dict(env, OMP_NUM_THREADS=str(T))
        procs = {}
        for impl in ("torch", "elansr"):
            procs[impl] = subprocess.Popen(common + ["--worker", impl, "--t", str(T)], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True, env=env_t)
            assert procs[impl].stdout.readline().strip() == "ready"

        def run(impl, i):
            procs[impl].stdin.write(f"{i}\n")
            procs[impl].stdin.flush()
            return json.loads(procs[impl].stdout.readline())["ms"]

        for i, name in enumerate(names):
            # Same pixels: compare the two outputs of this case once.
            outs = {}
            for impl in ("torch", "elansr"):
                path = f"/tmp/cpu_bench_{os.getpid()}_{impl}.npy"
                procs[impl].stdin.write(f"out {i} {path}\n")
                procs[impl].stdin.flush()
                procs[impl].stdout.readline()
                outs[impl] = np.load(path)
                os.unlink(path)
            maxdiff = float(np.abs(outs["torch"].astype(np.float64) - outs["elansr"]).max())
            for _ in range(a.warmup):
                run("torch", i)
                run("elansr", i)
            ts = {"torch": [], "elansr": []}
            for r in range(a.reps):
                order = ("torch", "elansr") if r % 2 == 0 else ("elansr", "torch")
                for impl in order:
                    ts[impl].append(run(impl, i))
            row = {"case": name, "threads": T, "torch_ms": statistics.median(ts["torch"]),
                   "elansr_ms": statistics.median(ts["elansr"]), "torch_runs": ts["torch"],
                   "elansr_runs": ts["elansr"], "max_abs_diff": maxdiff}
            row["speedup"] = row["torch_ms"] / row["elansr_ms"]
            if not a.no_mem:
                for impl in ("torch", "elansr"):
                    o = subprocess.run(common + ["--mem", impl, "--t", str(T), "--case", str(i)], env=env_t,
                                       capture_output=True, text=True, check=True).stdout
                    m = json.loads(o.strip().splitlines()[-1])
                    row[f"{impl}_peak_mb"], row[f"{impl}_delta_mb"] = m["peak_mb"], m["delta_mb"]
            results.append(row)
            print(f"T={T} {name:24s} torch {row['torch_ms']:9.1f} ms  elansr {row['elansr_ms']:9.1f} ms  "
                  f"x{row['speedup']:.2f}  maxdiff {maxdiff:.2e}"
                  + ("" if a.no_mem else f"  peak MB torch {row['torch_peak_mb']:.0f} (+{row['torch_delta_mb']:.0f})"
                     f" elansr {row['elansr_peak_mb']:.0f} (+{row['elansr_delta_mb']:.0f})"), flush=True)
        for p in procs.values():
            p.stdin.close()
            p.wait()

    import platform
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    meta = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": __import__("torch").__version__, "reps": a.reps, "warmup": a.warmup, "lib": a.lib,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg()}
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=1)
    lines = [f"CPU: {cpu}, {os.cpu_count()} logical CPUs; torch {meta['torch']}; median of {a.reps} runs after "
             f"{a.warmup} warm-up, alternating; ELAN-light x4 fp32. Peak = max RSS of a fresh process running the "
             "case once (VmHWM: total / above its level before the run).", "",
             "| input | threads | PyTorch ms | elansr ms | speed-up | max abs diff | PyTorch peak MB | elansr peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        mem_t = f"{r['torch_peak_mb']:.0f} (+{r['torch_delta_mb']:.0f})" if "torch_peak_mb" in r else "-"
        mem_e = f"{r['elansr_peak_mb']:.0f} (+{r['elansr_delta_mb']:.0f})" if "elansr_peak_mb" in r else "-"
        lines.append(f"| {r['case']} | {r['threads']} | {r['torch_ms']:.1f} | {r['elansr_ms']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | {mem_t} | {mem_e} |")
    os.makedirs(os.path.dirname(a.md) or ".", exist_ok=True)
    with open(a.md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
