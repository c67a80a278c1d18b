#!/usr/bin/python3
"""fovea's streamed CLIP / SigLIP losses against PyTorch's straightforward version: time and peak memory of
forward + backward on random unit vectors (float32), the same B, D and thread count; writes the results section
of docs/losses.md and the plot docs/losses.png.

    /usr/bin/python3 bench/compare_loss_pytorch.py --build build            # B = 1024 ... 65536, D = 512, 2 threads
    /usr/bin/python3 bench/compare_loss_pytorch.py --build build --batches 1024,4096 --no-docs

PyTorch's version (what training scripts write):
    clip:   L = scale * image @ text.T;  loss = (cross_entropy(L, arange(B)) + cross_entropy(L.T, arange(B))) / 2
    siglip: L = scale * image @ text.T + bias;  loss = -logsigmoid((2 * eye(B) - 1) * L).sum() / B
It holds several B x B matrices, so it runs only up to --torch-max-batch (16,384: ~6 GiB; 32,768 would pass 20 GB).
Each measurement runs in its own process, so its peak resident memory (VmHWM) is its own. PyTorch runs with
torch.set_num_threads(threads) on OpenBLAS's OpenMP build (loaded through LD_LIBRARY_PATH, so that the BLAS obeys
that thread count); the BLAS it actually loaded is read from /proc/self/maps and reported.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPENBLAS_OPENMP = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
SCALE = {"clip": 100.0, "siglip": 10.0}  # CLIP's clamp of the learned scale; SigLIP's init (scale 10, bias -10)
BIAS = {"clip": 0.0, "siglip": -10.0}


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return 0.0


def torch_worker(kind, batch, dim, threads, repeat, save_dir):
    """Runs in a child process: times PyTorch's forward + backward and prints one JSON line."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    text = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    if save_dir:
        import numpy as np

        np.save(os.path.join(save_dir, "image.npy"), image.numpy())
        np.save(os.path.join(save_dir, "text.npy"), text.numpy())
    baseline = status_mib("VmRSS:")
    best, loss_value = float("inf"), None
    for _ in range(repeat):
        x = image.clone().requires_grad_(True)
        y = text.clone().requires_grad_(True)
        scale = torch.tensor(SCALE[kind], requires_grad=True)
        bias = torch.tensor(BIAS[kind], requires_grad=True)
        t0 = time.perf_counter()
        logits = scale * x @ y.T
        if kind == "clip":
            labels = torch.arange(batch)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        else:
            logits = logits + bias
            z = 2 * torch.eye(batch) - 1
            loss = -F.logsigmoid(z * logits).sum() / batch
        loss.backward()
        best = min(best, time.perf_counter() - t0)
        loss_value = float(loss)
        del logits, loss, x, y
    with open("/proc/self/maps") as f:
        blas = sorted({line.split()[-1] for line in f if re.search(r"lib(open)?blas", line)})
    config = torch.__config__.show()
    blas_info = re.search(r"BLAS_INFO=([^,\s]+)", config)
    print(json.dumps({
        "seconds": best,
        "peak_rss_mib": status_mib("VmHWM:"),
        "baseline_rss_mib": baseline,
        "loss": loss_value,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas_info": blas_info.group(1) if blas_info else "?",
        "blas_loaded": blas,
    }))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_env(threads):
    env = dict(os.environ)
    if os.path.isdir(OPENBLAS_OPENMP):
        env["LD_LIBRARY_PATH"] = OPENBLAS_OPENMP + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def run_torch(kind, batch, dim, threads, repeat, save_dir=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--batches", str(batch), "--dim", str(dim),
           "--threads", str(threads), "--repeat", str(repeat)]
    if save_dir:
        cmd += ["--save", save_dir]
    return run_json(cmd, torch_env(threads))


def run_fovea(tool, kind, batch, dim, threads, repeat):
    """fovea-loss bench; --sgemm adds fovea::gemm's SGEMM rate on the same product shape, taken around the run."""
    return run_json([tool, "bench", "--kind", kind, "--batch", str(batch), "--dim", str(dim), "--threads",
                     str(threads), "--repeat", str(repeat), "--sgemm", "--json"])


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def plot(rows, path, dim, threads):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {("fovea", "clip"): ("C0", "-o"), ("fovea", "siglip"): ("C1", "-o"),
              ("pytorch", "clip"): ("C0", "--s"), ("pytorch", "siglip"): ("C1", "--s")}
    for (who, kind), (color, style) in styles.items():
        pts = [r for r in rows if r["kind"] == kind and r.get(who)]
        if not pts:
            continue
        bs = [r["batch"] for r in pts]
        label = f"{'fovea (streamed)' if who == 'fovea' else 'PyTorch (B x B)'} {kind}"
        ax_t.plot(bs, [r[who]["seconds"] for r in pts], style, color=color, label=label)
        ax_m.plot(bs, [r[who]["peak_rss_mib"] for r in pts], style, color=color, label=label)
    for ax, title, unit in ((ax_t, "forward + backward time", "seconds"), (ax_m, "peak resident memory", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch B")
        ax.set_ylabel(unit)
        ax.set_title(f"{title} (D = {dim}, {threads} threads)")
        ax.grid(True, which="both", alpha=0.3)
    ax_m.axhline(20 * 1024, color="gray", lw=0.8, ls=":")
    ax_m.text(1024, 20 * 1024 * 1.1, "20 GB: PyTorch not run beyond", fontsize=8, color="gray")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def results_markdown(rows, meta):
    lines = [
        f"Measured {meta['date']} on {meta['cpu']}, {meta['threads']} threads, D = {meta['dim']}, float32, random unit "
        f"vectors; {meta['torch']} with `{meta['blas_info']}` BLAS, loaded: {', '.join(meta['blas_loaded']) or '?'}. "
        f"Load average {meta['load_before']} before and {meta['load_after']} after"
        + (" (the run's own threads count in the second)." if float(meta["load_before"].split()[0]) < 1.0 else
           ": the machine was shared, so read the times as measured under that load."),
        "",
        "SGEMM: the rate of fovea::gemm, the kernel the loss's products run, on the loss's own product shape (min(B, 4096) x D x min(B, 4096)), "
        "same threads, measured by `fovea-loss bench --sgemm` just before and just after each run and averaged, so "
        "that the ratio compares like with like on a shared machine.",
        "",
        "| loss | B | fovea s | fovea GFLOP/s | SGEMM GFLOP/s | of SGEMM | fovea peak MiB | beyond inputs + grads MiB "
        "| PyTorch s | PyTorch peak MiB | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f, t = r["fovea"], r.get("pytorch")
        ratio = f"{f['sgemm_gflops']:.0f} | {100 * f['gflops'] / f['sgemm_gflops']:.0f}%"
        torch_cols = (f"{t['seconds']:.3f} | {t['peak_rss_mib']:.0f} | {t['seconds'] / f['seconds']:.1f}x" if t
                      else "not run | " + ("would need > 20 GB" if r["batch"] > meta["torch_max"] else "-") + " | -")
        lines.append(f"| {r['kind']} | {r['batch']:,} | {f['seconds']:.3f} | {f['gflops']:.0f} | {ratio} | "
                     f"{f['peak_rss_mib']:.0f} | {f['extra_mib']:.1f} | {torch_cols} |")
    lines += [
        "",
        "fovea peak MiB is the whole process (VmHWM), inputs and gradients included (2 x 2 x B x D x 4 bytes: "
        "512 MiB at B = 65,536); 'beyond' subtracts them and the process's resident size before the inputs were "
        "made. PyTorch's peak includes the interpreter and libtorch (its baseline: "
        f"{meta['torch_baseline']:.0f} MiB with the inputs).",
    ]
    if meta.get("check"):
        lines += ["", meta["check"]]
    return "\n".join(lines)


def write_docs(md_path, section):
    begin, end = "<!-- results:begin (bench/compare_loss_pytorch.py) -->", "<!-- results:end -->"
    text = open(md_path).read() if os.path.exists(md_path) else f"# Losses\n\n## Measurements\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(md_path, "w") as f:
        f.write(f"{head}{begin}\n{section}\n{end}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="CMake build directory with fovea-loss")
    ap.add_argument("--batches", default="1024,4096,16384,65536")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="clip,siglip")
    ap.add_argument("--torch-max-batch", type=int, default=16384)
    ap.add_argument("--repeat", type=int, default=0, help="runs per point, best kept (default: 3 up to B = 4096, else 1)")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--no-docs", action="store_true", help="print the results only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        torch_worker(args.worker, batches[0], args.dim, args.threads, max(args.repeat, 1), args.save)
        return

    tool = os.path.join(args.build, "examples", "fovea-loss")
    if not os.path.exists(tool):
        sys.exit(f"no {tool}: build it first (cmake --build {args.build} --target fovea-loss)")
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": args.threads, "dim": args.dim,
            "torch_max": args.torch_max_batch, "load_before": load_average()}

    # Same math: PyTorch's inputs through fovea-loss's compute mode.
    with tempfile.TemporaryDirectory() as tmp:
        checks = []
        for kind in args.kinds.split(","):
            t = run_torch(kind, 1024, args.dim, args.threads, 1, tmp)
            cmd = [tool, "--kind", kind, "--image", os.path.join(tmp, "image.npy"), "--text",
                   os.path.join(tmp, "text.npy"), "--scale", str(SCALE[kind]), "--threads", str(args.threads), "--json"]
            if kind == "siglip":
                cmd += ["--bias", str(BIAS[kind])]
            f = run_json(cmd)
            checks.append(f"{kind} {f['loss']:.7g} vs {t['loss']:.7g}")
        meta["check"] = ("Same inputs through both at B = 1,024 (fovea-loss compute mode on PyTorch's tensors), loss: "
                         + "; ".join(checks) + ".")
        print(meta["check"], flush=True)

    rows = []
    for kind in args.kinds.split(","):
        for b in batches:
            repeat = args.repeat or (3 if b <= 4096 else 1)
            row = {"kind": kind, "batch": b, "fovea": run_fovea(tool, kind, b, args.dim, args.threads, repeat)}
            if b <= args.torch_max_batch:
                row["pytorch"] = run_torch(kind, b, args.dim, args.threads, repeat)
                meta.update({k: row["pytorch"][k] for k in ("torch", "blas_info", "blas_loaded")})
                meta["torch_baseline"] = row["pytorch"]["baseline_rss_mib"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta.setdefault("torch", "PyTorch")
    meta.setdefault("blas_info", "?")
    meta.setdefault("blas_loaded", [])
    meta.setdefault("torch_baseline", 0.0)
    meta["load_after"] = load_average()
    section = results_markdown(rows, meta)
    print(section)
    if not args.no_docs:
        os.makedirs(args.docs, exist_ok=True)
        plot(rows, os.path.join(args.docs, "losses.png"), args.dim, args.threads)
        section += "\n\n![time and peak memory against B](losses.png)"
        write_docs(os.path.join(args.docs, "losses.md"), section)


if __name__ == "__main__":
    main()
