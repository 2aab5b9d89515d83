#!/usr/bin/env python3
"""report.py RESULTS OUT: turn what scripts/gpu/run collected into OUT/report.json and report.md.

RESULTS holds environment.json, one PART.json per part (exit code, seconds, output), the
benchmark's bench.jsonl and bench-kernels.jsonl, the PyTorch twins' torch.jsonl and pipeline-metrics.json; any may be
missing (a part not run, or one that failed before writing)."""

import datetime
import json
import re
import sys
from pathlib import Path

NO_GPU = re.compile(r"no CUDA GPU|CUDA_ERROR_NO_DEVICE|no NVIDIA driver", re.I)
PARTS = ["tests", "kernels", "bench", "bench-kernels", "torch", "pipeline"]


def load_json(path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def load_lines(path):
    try:
        return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    except (OSError, ValueError):
        return []


def verdict(part):
    if part["timed_out"]:
        return "timed out"
    if part["rc"] == 0:
        return "ok"
    if NO_GPU.search(part["output"]):
        return "no GPU"
    return f"failed (exit {part['rc']})"


def rate(row):
    if "samples_per_s" in row:
        return row["samples_per_s"], "samples/s"
    return row.get("tokens_per_s", 0.0), "tokens/s"


def bench_table(ours, theirs):
    """One row per measured configuration; PyTorch rows get vlmflow's FLOP count for MFU."""
    flops = {(r["bench"], r["dtype"]): r["flops_per_step"] for r in ours}
    peak = next((r["flops_per_step"] / (r["ms_median"] / 1e3) / r["mfu"] for r in ours if r.get("mfu")), None)
    torch_rate = {(r["bench"], r["dtype"]): rate(r)[0] for r in theirs}
    lines = [
        "| bench | model | dtype | implementation | ms/step median (p10–p90) | throughput | TFLOP/s | MFU | memory GiB | vs PyTorch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in ours + theirs:
        key = (r["bench"], r["dtype"])
        value, unit = rate(r)
        f = flops.get(key)
        tflops = f / (r["ms_median"] / 1e3) / 1e12 if f else None
        mfu = f"{100 * tflops * 1e12 / peak:.1f}%" if tflops and peak else "–"
        impl = "PyTorch eager" if r["impl"] == "pytorch" else f"vlmflow, {r.get('ops', '')}"
        mem = r.get("peak_mem_bytes")
        vs = f"{value / torch_rate[key]:.2f}×" if r["impl"] != "pytorch" and torch_rate.get(key) else "–"
        lines.append(
            f"| {r['bench']} | {r['model']} | {r['dtype']} | {impl} | "
            f"{r['ms_median']:.1f} ({r['ms_p10']:.1f}–{r['ms_p90']:.1f}) | {value:,.0f} {unit} | "
            f"{f'{tflops:.1f}' if tflops else '–'} | {mfu} | "
            f"{f'{mem / 2**30:.1f}' if mem is not None else '–'} | {vs} |"
        )
    return lines


def main():
    results, out = Path(sys.argv[1]), Path(sys.argv[2])
    env = load_json(results / "environment.json", {})
    parts = [p for p in (load_json(results / f"{n}.json", None) for n in PARTS) if p]
    ours = load_lines(results / "bench.jsonl") + load_lines(results / "bench-kernels.jsonl")
    theirs = load_lines(results / "torch.jsonl")
    for rows in (ours, theirs):
        rows.sort(key=lambda r: (r["bench"], r["dtype"], r.get("ops", "")))
    metrics = load_json(results / "pipeline-metrics.json", [])

    md = [
        f"# GPU check, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"GPU: {env.get('gpu') or 'none found'}; driver libraries: {env.get('driver_libs')}; "
        f"CUDA libraries: {env.get('cuda_libs')}; PyTorch {env.get('torch')}.",
        "",
        "| part | outcome | seconds |",
        "| --- | --- | --- |",
    ]
    md += [f"| {p['part']} | {verdict(p)} | {p['seconds']} |" for p in parts]
    for p in parts:
        if p["part"] not in ("tests", "kernels"):
            continue
        title = "composite ops" if p["part"] == "tests" else "VLMFLOW_CUDA_KERNELS=1"
        md += ["", f"## GPU tests ({title})", "", "```"]
        keep = [
            l for l in p["output"].splitlines()
            if re.match(r"(test |clip \(|vlm \(|.*rel err|.*panicked|no CUDA GPU)", l)
        ]
        md += keep or p["output"].splitlines()[-15:]
        md.append("```")
    if ours or theirs:
        md += ["", "## Benchmark", ""] + bench_table(ours, theirs) + [
            "",
            "MFU: the step's matmul FLOPs (benches/gpu.rs) over the GPU's bf16 peak, for PyTorch too. "
            "Memory is not like for like: vlmflow's is device memory in use after the forward less "
            "what was in use before the model (cuMemGetInfo); PyTorch's is max_memory_allocated.",
        ]
    pipeline = next((p for p in parts if p["part"] == "pipeline"), None)
    if pipeline:
        md += ["", f"## Default pipeline, `vlmflow build --device cuda` ({verdict(pipeline)}, {pipeline['seconds']} s)", "", "```"]
        md += pipeline["output"].splitlines()[-20:]
        md.append("```")
        if metrics:
            md += ["", "| stage | metric | value |", "| --- | --- | --- |"]
            md += [f"| {m['stage']} | {m['name']} | {m['value']:.4g} |" for m in metrics if isinstance(m.get("value"), (int, float))]

    for p in parts:
        p["output"] = p["output"][-4000:]
    report = {"environment": env, "parts": parts, "bench": ours, "torch": theirs, "pipeline_metrics": metrics}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
