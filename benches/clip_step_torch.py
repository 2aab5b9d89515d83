#!/usr/bin/env python3
"""The same CLIP training step as benches/clip_step.rs (CPU) and benches/gpu.rs `clip` (CUDA), in
PyTorch eager, for comparison.

`small` config (32-px images, 8-px patches, ViT 128×4 layers×4 heads; causal text 128×3×4;
embed 64), batch 64, 16-token captions, forward + backward + clip-norm + AdamW, 2 threads.
`--model vit-b16`: ViT-B/16's shape (224-px images, 16-px patches, ViT 768×12×12; text
512×12×8 over CLIP's 49,408-token vocabulary, 77-token captions; embed 512), batch 8 on CPU,
128 on CUDA (benches/gpu.rs's `GPU_BENCH_CLIP_BATCH` default). Both towers pre-LN, tanh-GELU,
4× MLP, LayerNorm eps 1e-5; the ViT has a CLS token, no ln_pre, and pools the CLS token through
ln_post; the text tower pools position length−1 through ln_final. Images are random normal,
tokens random ids, lengths random in 4..=tokens.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch
    /tmp/venv/bin/python benches/clip_step_torch.py [--model vit-b16] [--steps 10] [--threads 2]
        [--batch N] [--tokens T] [--warmup N] [--attn math|sdpa] [--json out.jsonl]
    # on a CUDA GPU, against `cargo bench --features cuda --bench gpu -- clip`:
    python3 benches/clip_step_torch.py --model vit-b16 --device cuda --dtype f32 --batch 128 --json out.jsonl
    python3 benches/clip_step_torch.py --model vit-b16 --device cuda --dtype bf16 --batch 128 --json out.jsonl

--device cuda: model, inputs and AdamW state on the GPU (`--threads` is ignored); each step is
timed by a pair of CUDA events after `--warmup` untimed steps (3 on CUDA; on CPU 2, or 1 when 3
or fewer steps are timed), over `--steps` timed steps (20 on CUDA), and the median, 10th and
90th percentiles are reported with the peak of `torch.cuda.max_memory_allocated()` over the timed
steps (weights, gradients, AdamW state and activations; not the caching allocator's reserve).
TF32 is off (`torch.backends.cuda.matmul.allow_tf32 = False`, `torch.backends.cudnn.allow_tf32 =
False`): f32 means plain f32 GEMMs, as the Rust side does.

--dtype bf16: mixed precision as vlmflow's `Precision::Bf16`: f32 master weights and AdamW state,
the forward under `torch.autocast(device, dtype=torch.bfloat16)` (matmuls and attention in bf16),
the L2 normalisation, similarity table and loss in f32; backward outside autocast; no GradScaler
(bf16 needs none). f32 (the default): no autocast.

--attn: each tower's attention written out (matmul, mask, softmax, matmul; the default, as
always on CPU) or as F.scaled_dot_product_attention (causal for the text tower).

--json PATH appends one line per run: bench "clip", impl "pytorch", model, device, dtype, attn,
batch, tokens (caption length), steps, ms_median, ms_p10, ms_p90, samples_per_s (batch / median
step), peak_mem_bytes (null on CPU), loss (the last step's), torch (version), gpu (the device's
name, null on CPU). On CPU the step times are wall-clock per step.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, width, heads, attn="math", causal=False):
        super().__init__()
        self.heads, self.attn, self.causal = heads, attn, causal
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(width, width) for _ in range(4)
        )

    def forward(self, x, mask):
        n, t, c = x.shape
        split = lambda y: y.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if self.attn == "sdpa":  # `mask` is then the causal one, or none
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            scores = (q / math.sqrt(c // self.heads)) @ k.transpose(-1, -2)
            if mask is not None:
                scores = scores + mask
            y = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(n, t, c))


class Block(nn.Module):
    def __init__(self, width, heads, attn="math", causal=False):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, attn, causal)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.ln_2(x)), approximate="tanh"))


class Vit(nn.Module):
    def __init__(self, size=32, patch=8, width=128, layers=4, heads=4, attn="math"):
        super().__init__()
        self.patch, grid = patch, size // patch
        self.patch_proj = nn.Linear(3 * patch * patch, width, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads, attn) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, img):
        n, _, h, _ = img.shape
        p, g = self.patch, h // self.patch
        x = img.view(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * p * p)
        x = self.patch_proj(x)
        x = torch.cat([self.class_embedding.expand(n, 1, -1), x], 1) + self.position_embedding
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x[:, 0])


class Text(nn.Module):
    def __init__(self, vocab=64, max_len=32, width=128, layers=3, heads=4, attn="math"):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Parameter(torch.randn(max_len, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads, attn, causal=True) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens, lengths):
        n, t = tokens.shape
        x = self.token_embedding(tokens) + self.position_embedding[:t]
        mask = torch.full((t, t), -1e9, device=tokens.device).triu(1)
        for b in self.blocks:
            x = b(x, mask)
        return self.ln_final(x[torch.arange(n, device=tokens.device), lengths - 1])


# (vision: size, patch, width, layers, heads; text: vocab, max_len, width, layers, heads; embed),
# as `ClipConfig::small` / `ClipConfig::vit_b16`; plus the bench's batch (CPU, CUDA), caption
# length, steps (CPU).
MODELS = {
    "small": dict(vision=(32, 8, 128, 4, 4), text=(64, 32, 128, 3, 4), embed=64,
                  batch=64, cuda_batch=64, tokens=16, steps=10),
    "vit-b16": dict(vision=(224, 16, 768, 12, 12), text=(49408, 77, 512, 12, 8), embed=512,
                    batch=8, cuda_batch=128, tokens=77, steps=3),
}
CUDA_STEPS, CUDA_WARMUP = 20, 3


class Clip(nn.Module):
    def __init__(self, vision=MODELS["small"]["vision"], text=MODELS["small"]["text"], embed=64,
                 attn="math"):
        super().__init__()
        self.vision, self.text = Vit(*vision, attn=attn), Text(*text, attn=attn)
        self.visual_projection = nn.Linear(vision[2], embed, bias=False)
        self.text_projection = nn.Linear(text[2], embed, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, img, tokens, lengths):
        i = self.visual_projection(self.vision(img))
        t = self.text_projection(self.text(tokens, lengths))
        # Normalised, scored and the loss taken in f32 (as clip.rs's l2_normalize), also under
        # autocast; without autocast this is the plain computation.
        with torch.autocast(img.device.type, enabled=False):
            i, t = F.normalize(i.float(), dim=-1), F.normalize(t.float(), dim=-1)
            logits = self.logit_scale.clamp(max=math.log(100)).exp() * i @ t.T
            labels = torch.arange(len(img), device=img.device)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def no_decay(name):
    last = name.split(".")[-1]
    return (
        last in ("bias", "logit_scale")
        or "embedding" in last
        or any(s.startswith("ln") or "norm" in s for s in name.split("."))
    )


# ------------------------------------------------------------------ shared with vlm_step_torch.py


def add_device_args(ap):
    """--device, --dtype, --warmup and --json (both twins)."""
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="bf16: autocast mixed precision, f32 weights and AdamW state")
    ap.add_argument("--warmup", type=int, help="untimed steps before the timed ones (3 on cuda)")
    ap.add_argument("--json", metavar="PATH", help="append one JSON line per benchmarked step")


def setup_device(args):
    """The torch.device to run on. CUDA: TF32 off, so f32 matmuls are plain f32 GEMMs (the legacy
    flags only: mixing them with the newer `fp32_precision` API is an error). CPU: the threads."""
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return torch.device("cuda")
    torch.set_num_threads(args.threads)
    return torch.device("cpu")


def autocast(device, dtype):
    """The forward's context: bf16 autocast on `device`, or nothing for f32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def measure(step, warmup, steps, device):
    """Runs `warmup` untimed training steps, then `steps` timed ones. `step(phases)` runs one and
    returns its (detached) loss; on CPU it adds its forward/backward/optimizer seconds to `phases`
    (given None on CUDA, where the host runs ahead of the GPU). Each timed step is timed by CUDA
    events on the current stream (CUDA) or the wall clock (CPU).

    Returns a dict: ms (sorted per-step times), per (the timed loop's mean seconds per step),
    phases, loss (the last step's), peak (max_memory_allocated over the timed steps, bytes; None
    on CPU), load_before (the load average before the timed steps)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        step(None)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    load_before = open("/proc/loadavg").read().strip()
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    ms, loss = [], float("nan")
    start = time.perf_counter()
    for _ in range(steps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            out = step(None)
            end.record()
            end.synchronize()
            ms.append(begin.elapsed_time(end))
            loss = out.item()
        else:
            t0 = time.perf_counter()
            loss = step(phases).item()
            ms.append((time.perf_counter() - t0) * 1e3)
    per = (time.perf_counter() - start) / max(steps, 1)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return dict(ms=sorted(ms), per=per, phases=phases, loss=loss, peak=peak, load_before=load_before)


def percentile(sorted_ms, p):
    """The `p` quantile by the nearest rank, as benches/gpu.rs (`ms[round((n − 1)·p)]`)."""
    return sorted_ms[math.floor((len(sorted_ms) - 1) * p + 0.5)]


def gpu_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def write_json(path, r, device, *, bench, model, dtype, batch, tokens, rate, **extra):
    """Appends the JSON line of one run `r` (from `measure`); `rate`: samples_per_s or
    tokens_per_s, per sample or per token counted in `batch` (× `tokens`)."""
    median = percentile(r["ms"], 0.5)
    per_step = batch * (tokens if rate == "tokens_per_s" else 1)
    line = {
        "bench": bench, "impl": "pytorch", "model": model, "device": device.type, "dtype": dtype,
        **extra, "batch": batch, "tokens": tokens, "steps": len(r["ms"]), "ms_median": median,
        "ms_p10": percentile(r["ms"], 0.1), "ms_p90": percentile(r["ms"], 0.9),
        rate: per_step * 1e3 / median, "peak_mem_bytes": r["peak"], "loss": r["loss"],
        "torch": torch.__version__, "gpu": gpu_name(device),
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def gpu_summary(r, rate, unit):
    """The CUDA result line: median, p10, p90, the rate at the median, peak memory."""
    median = percentile(r["ms"], 0.5)
    return (
        f"  {median:.1f} ms/step median (p10 {percentile(r['ms'], 0.1):.1f}, p90 "
        f"{percentile(r['ms'], 0.9):.1f}) over {len(r['ms'])} steps, {rate * 1e3 / median:.0f} "
        f"{unit}/s, peak {r['peak'] / 2**30:.2f} GiB allocated; loss {r['loss']:.3f}"
    )


# ------------------------------------------------------------------ the bench


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), default="small")
    ap.add_argument("--steps", type=int, help="timed steps (10; 3 for vit-b16; 20 on cuda)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on cuda)")
    ap.add_argument("--batch", type=int, help="64; 8 for vit-b16 (128 on cuda)")
    ap.add_argument("--tokens", type=int, help="caption length: 16; 77 for vit-b16")
    ap.add_argument("--attn", choices=["math", "sdpa"], default="math",
                    help="attention written out (default) or F.scaled_dot_product_attention")
    add_device_args(ap)
    args = ap.parse_args()
    m = MODELS[args.model]
    dev = setup_device(args)
    cuda = dev.type == "cuda"
    steps = args.steps or (CUDA_STEPS if cuda else m["steps"])
    warmup = args.warmup if args.warmup is not None else (
        CUDA_WARMUP if cuda else 2 if steps > 3 else 1
    )
    torch.manual_seed(0)

    with dev:  # parameters and inputs made on the device
        model = Clip(m["vision"], m["text"], m["embed"], attn=args.attn)
        named = list(model.named_parameters())
        opt = torch.optim.AdamW(
            [
                {"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.05},
                {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
            ],
            lr=1e-3,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        b = args.batch or (m["cuda_batch"] if cuda else m["batch"])
        t = args.tokens or m["tokens"]
        size, vocab = m["vision"][0], m["text"][0]
        img = torch.randn(b, 3, size, size)
        tokens = torch.randint(0, vocab, (b, t))
        lengths = torch.randint(4, t + 1, (b,))

    def step(phases):
        t0 = time.perf_counter()
        with autocast(dev, args.dtype):
            loss = model.loss(img, tokens, lengths)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        if phases is not None:
            for k, d in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2)):
                phases[k] += d
        return loss.detach()

    r = measure(step, warmup, steps, dev)
    per, phases, loss = r["per"], r["phases"], r["loss"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"load average {open('/proc/loadavg').read().strip()} (before the timed steps: {r['load_before']})")
    where = f"threads {torch.get_num_threads()}" if not cuda else f"{gpu_name(dev)}"
    if cuda or args.dtype != "f32" or args.attn != "math":
        where += f", {args.device} {args.dtype}, attention {args.attn}"
    print(
        f"clip_step_torch {args.model}: batch {b}, {t} tokens, vocabulary {vocab}, {n_params} params, "
        f"torch {torch.__version__}, {where}"
    )
    if cuda:
        print(gpu_summary(r, b, "samples"))
    else:
        ms = {k: v * 1e3 / steps for k, v in phases.items()}
        print(
            f"  {per * 1e3:.1f} ms/step ({b / per:.{2 if b / per < 100 else 0}f} samples/s) = forward {ms['forward']:.1f}"
            f" + backward {ms['backward']:.1f} + clip/adamw {ms['optimizer']:.1f} ms; loss {loss:.3f}"
        )
    if args.json:
        write_json(args.json, r, dev, bench="clip", model=args.model, dtype=args.dtype,
                   attn=args.attn, batch=b, tokens=t, rate="samples_per_s")


if __name__ == "__main__":
    main()
