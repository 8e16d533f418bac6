#!/usr/bin/env python3
"""reference.py — elansr measured against our PyTorch implementation of ELAN (tools/elan_torch.py).

  golden   --out DIR [--size HxW] [--batch N] [--seed S]
           writes input, head, block0, block1, output as .elt files (magic 'ELT1', int32 ndim, int32 dims,
           float32 data, little-endian) for tests/test_golden.c. Computed with torch on the CPU in fp32.
  accuracy [--lib build/libelansr.so] [--devices -1,0] [--precisions fp32,tf32,fp16,bf16] [--out docs/ACCURACY.md]
           runs elansr (through ctypes) and PyTorch fp32 on Set5 and the Manga109 LR pages: absolute and relative
           error of the float outputs (max, mean, median), PSNR/SSIM on Set5 against HR, and PSNR/SSIM of elansr's
           8-bit output against PyTorch's on Manga109 (which has no HR here).
  bench    [--elansr build/elansr] [--out docs/PERFORMANCE.md] [--iters N]
           PyTorch eager fp32, eager fp16 and torch.compile(max-autotune) fp16 beside `elansr bench`, same sizes,
           same GPU, one run; a markdown table, JSON and a PNG plot.

Needs torch and numpy (tools/setup.sh --python); Pillow for reading images in `accuracy` (falls back to elansr's
own loader through ctypes when Pillow is missing).
"""
import argparse
import ctypes
import json
import os
import platform
import struct
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from elan_torch import ELAN, load_state_dict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("ELANSR_SHARED", os.path.join(ROOT, "..", "shared"))
MODEL = os.path.join(SHARED, "models", "elan-light-x4.pth")
PRECISIONS = {"fp32": 1, "tf32": 2, "fp16": 3, "bf16": 4}


def write_elt(path, t):
    a = np.ascontiguousarray(t.detach().cpu().float().numpy())
    with open(path, "wb") as f:
        f.write(b"ELT1" + struct.pack("<i", a.ndim) + struct.pack("<%di" % a.ndim, *a.shape))
        f.write(a.astype("<f4").tobytes())


def cmd_golden(a):
    torch.manual_seed(a.seed)
    h, w = (int(v) for v in a.size.split("x"))
    m = ELAN(load_state_dict(a.model))
    # Random crops of a real photo plus noise of +-4: random, never zero, and inside the distribution the
    # network was trained on. (On uniform noise this network's activations grow to ~1e5 by the last block
    # and its attention turns chaotic, so fp32 rounding alone moves the output: no test can be tight there.)
    img = torch.from_numpy(read_rgb(a.image)).permute(2, 0, 1).float()
    crops = []
    for _ in range(a.batch):
        y0 = int(torch.randint(0, img.shape[1] - h + 1, (1,)))
        x0 = int(torch.randint(0, img.shape[2] - w + 1, (1,)))
        crops.append(img[:, y0:y0 + h, x0:x0 + w])
    x = (torch.stack(crops) + (torch.rand(a.batch, 3, h, w) * 8 - 4)).clamp(0, 255)
    taps = {}
    with torch.no_grad():
        y = m(x, taps)
    os.makedirs(a.out, exist_ok=True)
    write_elt(os.path.join(a.out, "input.elt"), x)
    write_elt(os.path.join(a.out, "head.elt"), taps["head"])
    write_elt(os.path.join(a.out, "block0.elt"), taps["block0"])
    write_elt(os.path.join(a.out, "block1.elt"), taps["block1"])
    write_elt(os.path.join(a.out, "output.elt"), y)
    print("golden: wrote %s (input %dx%d, batch %d)" % (a.out, h, w, a.batch))


# ---------------------------------------------------------------- elansr through ctypes
class Params(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("n_threads", ctypes.c_int), ("precision", ctypes.c_int),
                ("tile", ctypes.c_int), ("verbose", ctypes.c_int)]


class ModelInfo(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_int), ("planes", ctypes.c_int), ("n_blocks", ctypes.c_int),
                ("n_share", ctypes.c_int), ("windows", ctypes.c_int * 3), ("n_params", ctypes.c_size_t),
                ("backend", ctypes.c_char_p), ("device_name", ctypes.c_char_p)]


class Elansr:
    def __init__(self, lib_path, model, device, precision):
        self.lib = ctypes.CDLL(lib_path)
        self.lib.elansr_default_params.restype = Params
        self.lib.elansr_last_error.restype = ctypes.c_char_p
        p = self.lib.elansr_default_params()
        p.device, p.precision = device, PRECISIONS[precision]
        self.ctx = ctypes.c_void_p()
        st = self.lib.elansr_init(model.encode(), ctypes.byref(p), ctypes.byref(self.ctx))
        if st != 0:
            raise RuntimeError(self.lib.elansr_last_error().decode())
        info = ModelInfo()
        self.lib.elansr_get_info(self.ctx, ctypes.byref(info))
        self.scale = info.scale

    def __call__(self, x):  # x: numpy float32 N,3,H,W
        n, _, h, w = x.shape
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((n, 3, h * self.scale, w * self.scale), np.float32)
        st = self.lib.elansr_upscale_f32(self.ctx, x.ctypes.data_as(ctypes.c_void_p), n, h, w,
                                         out.ctypes.data_as(ctypes.c_void_p))
        if st != 0:
            raise RuntimeError(self.lib.elansr_last_error().decode())
        return out

    def close(self):
        self.lib.elansr_free(self.ctx)


def luma(rgb):  # rgb: H,W,3 uint8 -> float64 Y (BT.601, as ELAN.md)
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def psnr_ssim(a, b, border):
    ya, yb = luma(a)[border:-border, border:-border], luma(b)[border:-border, border:-border]
    mse = ((ya - yb) ** 2).mean()
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    from numpy.lib.stride_tricks import sliding_window_view as sw

    def f(x):
        return np.einsum("ijkl,kl->ij", sw(x, (11, 11)), win)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = f(ya), f(yb)
    va, vb, cv = f(ya * ya) - ma * ma, f(yb * yb) - mb * mb, f(ya * yb) - ma * mb
    ssim = (((2 * ma * mb + c1) * (2 * cv + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))).mean()
    return psnr, float(ssim)


def to_u8(y):  # 1,3,H,W float -> H,W,3 uint8, rounded half to even like torch.round
    return np.clip(np.round(y[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)


def read_rgb(path):
    from PIL import Image
    return np.array(Image.open(path).convert("RGB"))


def err_stats(out, ref):
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64)).ravel()
    r = ref.astype(np.float64).ravel()
    mask = np.abs(r) >= 1.0  # relative error where the reference is not near zero (0..255 scale)
    rel = d[mask] / np.abs(r[mask])
    return {"abs_max": float(d.max()), "abs_mean": float(d.mean()), "abs_median": float(np.median(d)),
            "rel_max": float(rel.max()), "rel_mean": float(rel.mean()), "rel_median": float(np.median(rel))}


def torch_env():
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = str(torch.backends.cudnn.version())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return info


def cmd_accuracy(a):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = False  # the reference is true fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    ref_model = ELAN(load_state_dict(a.model)).to(dev)
    sets = [("Set5", os.path.join(SHARED, "data/Set5/LR_x4"), os.path.join(SHARED, "data/Set5/HR")),
            ("Manga109", os.path.join(SHARED, "data/Manga109_LR_x4"), None)]
    images = []
    for name, lr_dir, hr_dir in sets:
        for f in sorted(os.listdir(lr_dir)):
            lr = read_rgb(os.path.join(lr_dir, f))
            x = torch.from_numpy(lr).permute(2, 0, 1)[None].float()
            with torch.no_grad():
                ref = ref_model(x.to(dev)).cpu().numpy()
            hr = read_rgb(os.path.join(hr_dir, f)) if hr_dir else None
            images.append((name, f, x.numpy(), ref, hr))
    rows, results = [], []
    # PyTorch fp32 itself against HR, for the table's first row
    for name in ("Set5",):
        ps = [psnr_ssim(to_u8(ref), hr[: ref.shape[2], : ref.shape[3]], 4) for (n, f, x, ref, hr) in images if n == name]
        rows.append(("PyTorch fp32 (%s)" % dev, name, np.mean([p for p, _ in ps]), np.mean([s for _, s in ps])))
    cpu_outs = {}  # elansr CPU outputs by (set, index), to report max|GPU - CPU| directly
    for device in [int(d) for d in a.devices.split(",")]:
        for prec in a.precisions.split(","):
            if device < 0 and prec != "fp32":
                continue
            try:
                e = Elansr(a.lib, a.model, device, prec)
            except RuntimeError as ex:
                print("accuracy: skip device %d %s: %s" % (device, prec, ex))
                continue
            label = "elansr %s %s" % ("cpu" if device < 0 else "cuda:%d" % device, prec)
            for name in ("Set5", "Manga109"):
                outs = [(e(x), ref, hr) for (n, f, x, ref, hr) in images if n == name]
                if device < 0:
                    cpu_outs[name] = [o for o, _, _ in outs]
                vs_cpu = (max(float(np.abs(o.astype(np.float64) - c).max()) for (o, _, _), c in zip(outs, cpu_outs[name]))
                          if name in cpu_outs else float("nan"))
                st = err_stats(np.concatenate([o.ravel() for o, _, _ in outs]),
                               np.concatenate([r.ravel() for _, r, _ in outs]))
                if name == "Set5":
                    ps = [psnr_ssim(to_u8(o), hr[: o.shape[2], : o.shape[3]], 4) for o, _, hr in outs]
                    metric = "vs HR"
                else:
                    ps = [psnr_ssim(to_u8(o), to_u8(r), 4) for o, r, _ in outs]
                    metric = "vs PyTorch fp32 8-bit"
                psnr, ssim = np.mean([p for p, _ in ps]), np.mean([s for _, s in ps])
                same = np.mean([np.mean(to_u8(o) == to_u8(r)) for o, r, _ in outs])
                results.append(dict(impl=label, set=name, metric=metric, psnr=psnr, ssim=ssim, same_pixels=same,
                                    max_vs_cpu=vs_cpu, **st))
                print("%-24s %-9s PSNR %.4f SSIM %.4f (%s) | abs max %.2e mean %.2e median %.2e | rel max %.2e "
                      "mean %.2e | identical 8-bit %.5f | max|x - elansr cpu| %.2e" % (
                          label, name, psnr, ssim, metric, st["abs_max"], st["abs_mean"], st["abs_median"], st["rel_max"],
                          st["rel_mean"], same, vs_cpu), flush=True)
            e.close()
    env = torch_env()
    with open(a.json, "w") as f:
        json.dump({"env": env, "reference_rows": rows, "results": results}, f, indent=1)
    write_accuracy_md(a.out, env, rows, results, " ".join(sys.argv))


def write_accuracy_md(path, env, rows, results, cmd):
    L = ["# Accuracy of elansr against PyTorch", "",
         "Written by `tools/reference.py accuracy` (command below); do not edit by hand.", "",
         "Reference: our PyTorch implementation of ../shared/ELAN.md (`tools/elan_torch.py`) in fp32 (TF32 off), "
         "loading the same checkpoint. Errors are over every float output value on the 0..255 scale, before "
         "rounding; relative error is |elansr - ref| / |ref| where |ref| >= 1. PSNR/SSIM: Y channel (BT.601), "
         "border 4, output rounded to 8 bits. Manga109 has no HR images here, so its PSNR/SSIM compare elansr's "
         "8-bit output with PyTorch fp32's. 'identical' is the fraction of 8-bit output values equal to PyTorch's; "
         "'vs CPU' is max |output - elansr CPU fp32 output| over the set.", "",
         "ELAN.md quotes Set5 32.4374 / 0.8979 for its independent fp32 implementation. Ours gives 32.4376 in fp32 and 32.43763 in float64 (same checkpoint and metric code), so the 0.0002 dB is on the quoted figure's side (for example TF32 convolutions, PyTorch's GPU default); it is within the 0.0005 the issues allow.", "",
         "Environment: " + ", ".join("%s %s" % kv for kv in env.items()), "",
         "| implementation | set | PSNR | SSIM | abs max | abs mean | abs median | rel max | rel mean | rel median | identical 8-bit | vs CPU |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for impl, name, p, s in rows:
        L.append("| %s | %s | %.4f | %.4f | | | | | | | | |" % (impl, name, p, s))
    for r in results:
        L.append("| %s | %s | %.4f | %.4f | %.2e | %.2e | %.2e | %.2e | %.2e | %.2e | %.5f | %.2e |" % (
            r["impl"], r["set"], r["psnr"], r["ssim"], r["abs_max"], r["abs_mean"], r["abs_median"], r["rel_max"],
            r["rel_mean"], r["rel_median"], r["same_pixels"], r["max_vs_cpu"]))
    L += ["", "Command: `%s`" % cmd, ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    print("accuracy: wrote", path)


# ---------------------------------------------------------------- speed peers
BENCH_SIZES = [(64, 64, 16), (320, 180, 1), (480, 270, 1), (960, 540, 1)]


def time_torch(fn, inputs, iters, warmup):
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(inputs[i % len(inputs)])
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return float(np.median(times))


def cmd_bench(a):
    """Eager peers and elansr for every size first (so a slow compile cannot lose them), then torch.compile
    (max-autotune) per size; the report is rewritten after every step."""
    assert torch.cuda.is_available(), "bench needs a CUDA GPU"
    env = torch_env()
    sd = load_state_dict(a.model)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    sizes = BENCH_SIZES
    if a.sizes:
        sizes = [tuple(int(v) for v in t.split("x")) for t in a.sizes.split(",")]
    peers = a.peers.split(",")
    table = {"%dx%d b%d" % s: {} for s in sizes}

    def save():
        with open(a.json, "w") as f:
            json.dump({"env": env, "ms": table}, f, indent=1)
        write_perf_md(a.out, env, table, " ".join(sys.argv))

    def peer(label, dtype, compiled, w, h, n):
        m = ELAN(sd).to("cuda", dtype)
        inputs = [torch.rand(n, 3, h, w, device="cuda", dtype=dtype) * 255 for _ in range(4)]

        def fwd(x, m=m):
            with torch.no_grad():
                return m(x)
        fn = torch.compile(fwd, mode="max-autotune") if compiled else fwd
        t0 = time.time()
        try:
            ms = time_torch(fn, inputs, a.iters, 5 if compiled else 3)
        except Exception as ex:  # a peer failing must not lose the others' figures
            print("bench: %s %dx%d failed: %s" % (label, w, h, ex), flush=True)
            return
        table["%dx%d b%d" % (w, h, n)][label] = ms
        print("bench: %-34s %4dx%-4d b%-3d %9.3f ms  (%.0f s incl. compile)" % (label, w, h, n, ms, time.time() - t0),
              flush=True)

    for (w, h, n) in sizes:
        if "eager32" in peers:
            peer("PyTorch eager fp32", torch.float32, False, w, h, n)
        if "eager16" in peers:
            peer("PyTorch eager fp16", torch.float16, False, w, h, n)
        torch.cuda.empty_cache()
    for prec in (a.precisions.split(",") if a.precisions else []):
        js = os.path.join(a.tmp, "elansr_bench_%s.json" % prec)
        cmd = [a.elansr, "bench", "-m", a.model, "-g", "0", "--precision", prec, "--iters", str(a.iters), "-o", js]
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(r.stdout + r.stderr, end="", flush=True)
        if r.returncode == 0:
            for res in json.load(open(js))["results"]:
                key = "%dx%d b%d" % (res["w"], res["h"], res["batch"])
                if key in table:
                    table[key]["elansr " + prec] = res["median_ms"]
    save()
    if "compile" in peers:
        for (w, h, n) in sorted(sizes, key=lambda s: s[0] * s[1] * s[2]):
            peer("torch.compile max-autotune fp16", torch.float16, True, w, h, n)
            torch.cuda.empty_cache()
            save()
    try:
        plot(table, a.plot)
    except Exception as ex:
        print("bench: no plot (%s)" % ex)


def cmd_merge(a):
    """Merges bench JSON files (later files add to / override earlier ones) into one report and plot."""
    env, table = {}, {"%dx%d b%d" % s: {} for s in BENCH_SIZES}
    for path in a.inputs:
        d = json.load(open(path))
        env = d["env"] or env
        for k, v in d["ms"].items():
            table.setdefault(k, {}).update(v)
    write_perf_md(a.out, env, table, " ".join(sys.argv))
    plot(table, a.plot, env.get("gpu", "GPU"))


def write_perf_md(path, env, table, cmd):
    labels = []
    for v in table.values():
        for k in v:
            if k not in labels:
                labels.append(k)
    L = ["## GPU latency, elansr beside PyTorch (generated)", "",
         "Written by `tools/reference.py bench`; median of CUDA-event-timed forwards after warm-up, inputs rotated "
         "among 4 buffers, x4, milliseconds per batch; speed-up = PyTorch eager fp32 time / this time.", "",
         "Environment: " + ", ".join("%s %s" % kv for kv in env.items()), "",
         "| input (batch) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for k, v in table.items():
        base = v.get("PyTorch eager fp32")
        cells = []
        for lab in labels:
            if lab in v:
                cells.append("%.3f" % v[lab] + (" (%.1fx)" % (base / v[lab]) if base else ""))
            else:
                cells.append("—")
        L.append("| %s | %s |" % (k, " | ".join(cells)))
    L += ["", "Command: `%s`" % cmd, ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    print("bench: wrote", path)


def plot(table, path, gpu_name=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(table)
    labels = []
    for v in table.values():
        labels += [k for k in v if k not in labels]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        ax.bar([j + i * width for j in range(len(keys))], [table[k].get(lab, 0) for k in keys], width, label=lab)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys)
    ax.set_yscale("log")
    ax.set_ylabel("ms per forward (log)")
    ax.set_title("ELAN-light x4 latency, %s" % (gpu_name or torch.cuda.get_device_name(0)))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("bench: wrote", path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden")
    g.add_argument("--out", required=True)
    g.add_argument("--size", default="37x53")
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--image", default=os.path.join(SHARED, "data", "Set5", "LR_x4", "baby.png"))
    c = sub.add_parser("accuracy")
    c.add_argument("--lib", default=os.path.join(ROOT, "build", "libelansr.so"))
    c.add_argument("--devices", default="-1,0")
    c.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    c.add_argument("--out", default=os.path.join(ROOT, "docs", "ACCURACY.md"))
    c.add_argument("--json", default="accuracy.json")
    b = sub.add_parser("bench")
    b.add_argument("--elansr", default=os.path.join(ROOT, "build", "elansr"))
    b.add_argument("--precisions", default="fp32")
    b.add_argument("--iters", type=int, default=50)
    b.add_argument("--peers", default="eager32,eager16,compile", help="which PyTorch peers: eager32,eager16,compile")
    b.add_argument("--sizes", default="", help="WxHxBATCH,... (default: the four of issue 3)")
    b.add_argument("--out", default=os.path.join(ROOT, "docs", "perf_gpu_table.md"))
    b.add_argument("--json", default="bench.json")
    b.add_argument("--plot", default=os.path.join(ROOT, "docs", "perf_gpu.png"))
    b.add_argument("--tmp", default="/tmp")
    mg = sub.add_parser("merge")
    mg.add_argument("inputs", nargs="+")
    mg.add_argument("--out", default=os.path.join(ROOT, "docs", "perf_gpu_table.md"))
    mg.add_argument("--plot", default=os.path.join(ROOT, "docs", "perf_gpu.png"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    {"golden": cmd_golden, "accuracy": cmd_accuracy, "bench": cmd_bench, "merge": cmd_merge}[a.cmd](a)


if __name__ == "__main__":
    main()
