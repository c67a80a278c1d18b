#!/usr/bin/python3
"""Runs fovea's Google Benchmarks and the same shapes in PyTorch at the same thread count; writes
docs/performance.md with the ratios.

    /usr/bin/python3 bench/compare_pytorch.py --build build [--filter conv2d] [--out docs/performance.md]

Each benchmark family below maps a benchmark name (its arguments) to a PyTorch callable. PyTorch runs with
torch.set_num_threads(threads) and its BLAS is reported (Debian's python3-torch uses whatever libblas.so.3 the
alternatives system points to; install libopenblas0 for OpenBLAS). Timing: median of repeated runs after warm-up.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def blas_name():
    try:
        maps = open("/proc/self/maps").read()
    except OSError:
        return "unknown"
    for name in ("openblas-openmp", "openblas-pthread", "openblas", "blis", "mkl", "atlas"):
        if name in maps:
            return name
    return "reference BLAS" if "libblas" in maps else "unknown"


def time_torch(fn, min_time=0.3, reps=5):
    """Median seconds of one call, PyTorch side, in no_grad mode."""
    with torch.no_grad():
        fn()
        fn()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < min_time / reps or n < 1:
            fn()
            n += 1
        samples, cpu = [], []
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            samples.append((time.perf_counter() - t) / n)
            cpu.append((time.process_time() - c) / n)
    return statistics.median(samples), statistics.median(cpu)


# family -> (regex on the benchmark name, builder(match) -> (threads, description, callable))
FAMILIES = {}


def family(bench, pattern):
    def deco(builder):
        FAMILIES.setdefault(bench, []).append((re.compile(pattern), builder))
        return builder
    return deco


@family("bench_gemm", r"BM_sgemm/(\d+)/(\d+)/(\d+)/(\d+)")
def _sgemm(m):
    M, N, K, t = map(int, m.groups())
    a, b = torch.randn(M, K), torch.randn(K, N)
    return t, f"sgemm {M}x{N}x{K}", lambda: torch.mm(a, b)


@family("bench_conv2d", r"BM_conv2d/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)")
def _conv(m):
    N, C, H, O, k, s, p, g, t = map(int, m.groups())
    x, w, b = torch.randn(N, C, H, H), torch.randn(O, C // g, k, k), torch.randn(O)
    return t, f"conv2d N{N} {C}->{O} {k}x{k}/{s} p{p} g{g} at {H}", lambda: F.conv2d(x, w, b, s, p, 1, g)


@family("bench_resnet", r"BM_resnet/resnet:(\d+)/batch:(\d+)/threads:(\d+)")
def _resnet(m):
    import torchvision
    depth, n, t = map(int, m.groups())
    model = getattr(torchvision.models, f"resnet{depth}")().eval()
    x = torch.randn(n, 3, 224, 224)
    return t, f"torchvision resnet{depth} batch {n}", lambda: model(x)


def run_fovea(build, bench, flt):
    exe = os.path.join(build, "bench", bench)
    if not os.path.exists(exe):
        return []
    out = subprocess.run([exe, "--benchmark_format=json", f"--benchmark_filter={flt}", "--benchmark_min_time=0.3"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"]


def to_seconds(b, key="real_time"):
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
    return b[key] * unit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--filter", default=".")
    ap.add_argument("--out", default="docs/performance.md")
    args = ap.parse_args()
    rows = []
    load_before = os.getloadavg()
    for bench, pats in FAMILIES.items():
        for b in run_fovea(args.build, bench, args.filter):
            name = b["name"].replace("/real_time", "")
            for pat, builder in pats:
                m = pat.fullmatch(name)
                if not m:
                    continue
                threads, desc, fn = builder(m)
                torch.set_num_threads(threads)
                tt, tc = time_torch(fn)
                tf, cf = to_seconds(b), to_seconds(b, "cpu_time")
                rows.append((bench, desc, threads, tf, tt, cf, tc))
                print(f"{desc:50s} t={threads}  fovea {tf*1e3:9.3f} ms  torch {tt*1e3:9.3f} ms  x{tt/tf:5.2f}"
                      f"  cpu x{tc/cf:5.2f}", flush=True)
    with open(args.out, "w") as f:
        f.write(PREAMBLE.format(torch=torch.__version__, blas=blas_name(), cpu=cpu_name(),
                                load=" / ".join(f"{x:.1f}" for x in load_before) + " before, " +
                                " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " after"))
        for bench in FAMILIES:
            sel = [r for r in rows if r[0] == bench]
            if not sel:
                continue
            f.write(f"\n### {bench}\n\n| shape | threads | fovea ms | PyTorch ms | speed-up (wall) |"
                    " speed-up (CPU time, 1 thread) |\n|---|---|---|---|---|---|\n")
            for _, desc, t, tf, tt, cf, tc in sel:
                cpu = f"{tc/cf:.2f}" if t == 1 else "-"
                f.write(f"| {desc} | {t} | {tf*1e3:.3f} | {tt*1e3:.3f} | {tt/tf:.2f} | {cpu} |\n")
        f.write(POSTSCRIPT)


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


PREAMBLE = """# Performance against PyTorch

Written by `bench/compare_pytorch.py` (re-run it to refresh): every row is one Google Benchmark of fovea
(`build/bench/bench_*`, real time) and the same shapes in PyTorch {torch} ({blas}) at the same thread count
(`torch.set_num_threads`), median of repeated runs, forward only, float32. Speed-up > 1 means fovea is faster.
Machine: {cpu}, 2 cores. Load average (1/5/15 min) during the run: {load}. On a shared machine wall-clock
times of either side are inflated unevenly (PyTorch's OpenMP threads suffer most at 2 threads); the last column,
the ratio of CPU times of single-threaded runs, is the load-robust comparison.
"""
POSTSCRIPT = ""

if __name__ == "__main__":
    sys.exit(main())
