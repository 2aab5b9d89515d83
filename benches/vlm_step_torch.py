#!/usr/bin/env python3
"""The same VLM and LM training steps as benches/vlm_step.rs (CPU) and benches/gpu.rs `finetune`
(CUDA), in PyTorch eager, for comparison.

- vlm: the default finetune model. The `small` CLIP's ViT (32 px, 8-px patches, 128 wide,
  4 layers, 4 heads; pre-LN, CLS token), frozen; a resampler (16 learned queries, kv_proj,
  LayerNorms, 4-head attention, ln_post, proj); a Qwen2 decoder (vocabulary 512, 2 layers,
  128 wide, 4 query / 2 key-value heads, q/k/v biases, RoPE, RMSNorm, SwiGLU 512, tied
  embeddings). 64 images and 88-token sequences, the 16 image embeddings at column 4, the loss on
  20 labelled positions per row; projector (lr 1e-3) and LM (lr 3e-4) train, no weight decay.
- lm: the `lm-train` step. The same Qwen2 on 64 x 100 tokens, every position labelled,
  lr 2e-3, weight decay 0.05 (not on norms and biases, as vlmflow's `no_decay`).

`--model qwen2.5-0.5b` (benches/gpu.rs's `finetune` shape, random weights): the vision tower is
`ClipConfig::vit_b16`'s (224 px, 16-px patches, 768 wide, 12 layers, 12 heads; pre-LN blocks,
tanh-GELU, 4x MLP, CLS token, no ln_pre), frozen, run without a graph; the projector reads its
196 patch tokens (CLS dropped) after the last block and ln_post. The resampler has 64 queries
and 14 heads over the LM width (896 = 14 x 64; `--resampler-heads 8` for 8 x 112); the LM is
Qwen2.5-0.5B's shape: vocabulary 151,936, 896 wide, 24 layers, 14 query / 2 key-value heads
(head 64), SwiGLU 4,864, rope theta 1e6, RMSNorm eps 1e-6, q/k/v biases, tied embeddings. vlm:
batch 8 x 512 tokens, the 64 image embeddings at column 4, labels on the 128 positions before
the last 2; projector (lr 1e-4) and LM (lr x 0.3) train, weight decay 0.05 off norms, biases and
embeddings (benches/gpu.rs's `part_groups`). lm: batch 8 x 512 tokens, as the small lm step.

All: logits only at labelled positions, cross-entropy, backward, clip_grad_norm_(1.0) over what
trains, AdamW(betas 0.9/0.98, eps 1e-6). Tokens/s counts every sequence position (batch x
tokens / step time). Images are random normal, token ids random.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch
    /tmp/venv/bin/python benches/vlm_step_torch.py [vlm|lm|attention] [--steps 10] [--threads 2]
        [--attn sdpa|math] [--hf] [--model small|qwen2.5-0.5b] [--batch N] [--vlm-tokens T]
        [--lm-tokens T] [--resampler-heads H] [--warmup N] [--json out.jsonl]
    # on a CUDA GPU, against `cargo bench --features cuda --bench gpu -- finetune`:
    python3 benches/vlm_step_torch.py vlm --model qwen2.5-0.5b --device cuda --dtype f32 --batch 8 --json out.jsonl
    python3 benches/vlm_step_torch.py vlm --model qwen2.5-0.5b --device cuda --dtype bf16 --batch 8 --json out.jsonl

`attention` (only when named): the lm step's layers of causal grouped-query attention alone
(key/value heads repeated, then attention), forward and backward, as in vlm_step.rs.

--attn: the decoder's attention as F.scaled_dot_product_attention (what transformers uses by
default) or written out (matmul, mask, softmax, matmul); the vision tower's and the resampler's
attention is always written out. --hf: the decoder is transformers' Qwen2Model (pip install
transformers) instead of the one below. --check-hf: load one Qwen2Model's weights into the
decoder below (both attentions) and print the largest difference of their hidden states, then
exit (small model, CPU).

--device cuda: model, inputs and AdamW state on the GPU (`--threads` is ignored), `--warmup`
untimed steps (3; 2 on CPU), then `--steps` (20; 10 on CPU) each timed by a pair of CUDA events;
the median, 10th and 90th percentiles and the peak `torch.cuda.max_memory_allocated()` over the
timed steps are reported. TF32 is off (`torch.backends.cuda.matmul.allow_tf32 = False`,
`torch.backends.cudnn.allow_tf32 = False`): f32 means plain f32 GEMMs, as the Rust side does.
--dtype bf16: mixed precision as vlmflow's `Precision::Bf16`: f32 master weights and AdamW state,
the forward (the frozen tower's too) under `torch.autocast(device, dtype=torch.bfloat16)`
(matmuls and attention in bf16; autocast keeps the cross-entropy in f32), backward outside it,
no GradScaler. --json PATH appends one line per vlm or lm run: bench ("finetune" for vlm, "lm"),
impl "pytorch", model, device, dtype, attn, decoder, batch, tokens (sequence length), steps,
ms_median, ms_p10, ms_p90, tokens_per_s, peak_mem_bytes (null on CPU), loss (the last step's),
torch, gpu (null on CPU).
"""

import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # importing the CLIP twin leaves no __pycache__ in benches/
from clip_step_torch import (  # noqa: E402
    Attention, Vit, add_device_args, autocast, gpu_name, gpu_summary, measure, no_decay,
    setup_device, write_json,
)

VOCAB, IMAGE_AT, LABELLED, IGNORE = 512, 4, 20, -100
QWEN2_SMALL = dict(vocab=VOCAB, width=128, layers=2, heads=4, kv_heads=2, hidden=512, theta=1e4, eps=1e-6)
# Qwen2.5-0.5B's config.json (benches/gpu.rs `qwen2_5_0_5b`).
QWEN2_5_0_5B = dict(vocab=151_936, width=896, layers=24, heads=14, kv_heads=2, hidden=4_864,
                    theta=1e6, eps=1e-6)

# Per model: the LM; the vision tower (size, patch, width, layers, heads); the resampler; the
# bench's defaults (batch, sequence lengths, labelled positions per vlm row, the vlm step's
# learning rates for projector and LM and its weight decay).
MODELS = {
    "small": dict(lm=QWEN2_SMALL, vision=(32, 8, 128, 4, 4), queries=16, resampler_heads=4,
                  batch=64, vlm_tokens=88, lm_tokens=100, labelled=LABELLED,
                  vlm_lr=(1e-3, 3e-4), vlm_wd=0.0),
    "qwen2.5-0.5b": dict(lm=QWEN2_5_0_5B, vision=(224, 16, 768, 12, 12), queries=64,
                         resampler_heads=14, batch=8, vlm_tokens=512, lm_tokens=512,
                         labelled=128, vlm_lr=(1e-4, 3e-5), vlm_wd=0.05),
}
CPU_STEPS, CPU_WARMUP, CUDA_STEPS, CUDA_WARMUP = 10, 2, 20, 3


# ------------------------------------------------------------------ Qwen2 decoder


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, width, heads, kv_heads, hidden, eps, attn):
        super().__init__()
        self.heads, self.kv_heads, self.d, self.attn = heads, kv_heads, width // heads, attn
        self.input_layernorm = RMSNorm(width, eps)
        self.post_attention_layernorm = RMSNorm(width, eps)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, kv_heads * self.d)
        self.v_proj = nn.Linear(width, kv_heads * self.d)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def attention(self, x, cos, sin, mask):
        n, t, c = x.shape
        split = lambda y, h: y.view(n, t, h, self.d).transpose(1, 2)
        q = split(self.q_proj(x), self.heads)
        k = split(self.k_proj(x), self.kv_heads)
        v = split(self.v_proj(x), self.kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # Under autocast the f32 cos/sin made q and k f32: back to the projections' bf16, so
        # that attention runs in bf16 (a no-op in f32).
        q, k = q.to(v.dtype), k.to(v.dtype)
        rep = self.heads // self.kv_heads  # Hugging Face's repeat_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if self.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q / math.sqrt(self.d)) @ k.transpose(-1, -2) + mask
            y = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(n, t, c))

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Qwen2(nn.Module):
    """Token embeddings in, final-norm hidden states out; logits by the tied embedding matrix."""

    def __init__(self, vocab, width, layers, heads, kv_heads, hidden, theta, eps, attn="sdpa"):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)  # as vlmflow's (and HF's) init
        self.layers = nn.ModuleList(
            DecoderLayer(width, heads, kv_heads, hidden, eps, attn) for _ in range(layers)
        )
        self.norm = RMSNorm(width, eps)
        self.d, self.theta = width // heads, theta

    def hidden_states(self, embeds):
        n, t, _ = embeds.shape
        dev = embeds.device
        inv = self.theta ** (-torch.arange(0, self.d, 2, dtype=torch.float32, device=dev) / self.d)
        freqs = torch.arange(t, dtype=torch.float32, device=dev)[:, None] * inv[None]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((t, t), float("-inf"), device=dev).triu(1)
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)

    def logits(self, h):
        return h @ self.embed_tokens.weight.T


class HfQwen2(nn.Module):
    """The same decoder as transformers' Qwen2Model (its default attention, SDPA)."""

    def __init__(self, vocab, width, layers, heads, kv_heads, hidden, theta, eps, attn="sdpa"):
        super().__init__()
        from transformers import Qwen2Config, Qwen2Model

        cfg = Qwen2Config(
            vocab_size=vocab, hidden_size=width, intermediate_size=hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            rope_theta=theta, rms_norm_eps=eps, tie_word_embeddings=True, use_cache=False,
            max_position_embeddings=1024,
        )
        self.model = Qwen2Model._from_config(
            cfg, attn_implementation="sdpa" if attn == "sdpa" else "eager"
        )
        self.embed_tokens = self.model.embed_tokens

    def hidden_states(self, embeds):
        return self.model(inputs_embeds=embeds, use_cache=False).last_hidden_state

    def logits(self, h):
        return h @ self.embed_tokens.weight.T


def next_token_loss(lm, hidden, labels):
    """Cross-entropy of the logits at column i against labels[i + 1], where labelled."""
    n, t, c = hidden.shape
    targets = labels[:, 1:].reshape(-1)
    rows = (targets != IGNORE).nonzero().squeeze(1)
    h = hidden[:, :-1].reshape(n * (t - 1), c).index_select(0, rows)
    return F.cross_entropy(lm.logits(h), targets[rows])


# ------------------------------------------------------------------ the VLM


class Resampler(nn.Module):
    def __init__(self, vision_width, width, queries=16, heads=4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.kv_proj = nn.Linear(vision_width, width, bias=False)
        self.ln_q, self.ln_kv, self.ln_post = (nn.LayerNorm(width) for _ in range(3))
        self.attn = Attention(width, heads)  # q/k/v/out projections with biases
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, patches):
        kv = self.ln_kv(self.kv_proj(patches))
        q = self.ln_q(self.queries).expand(len(patches), -1, -1)
        a = self.attn
        n, s, c = kv.shape
        split = lambda y: y.view(n, y.shape[1], a.heads, c // a.heads).transpose(1, 2)
        qh, kh, vh = split(a.q_proj(q)), split(a.k_proj(kv)), split(a.v_proj(kv))
        scores = (qh / math.sqrt(c // a.heads)) @ kh.transpose(-1, -2)
        y = (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2).reshape(n, -1, c)
        return self.proj(self.ln_post(a.out_proj(y)))


class Vlm(nn.Module):
    def __init__(self, lm, width=QWEN2_SMALL["width"], vision=(32, 8, 128, 4, 4), queries=16,
                 heads=4):
        super().__init__()
        self.vision = Vit(*vision)
        self.projector = Resampler(vision[2], width, queries, heads)
        self.lm = lm

    def features(self, img):
        """Every token's final state after ln_post (what the projector reads), CLS first."""
        v = self.vision
        n, _, h, _ = img.shape
        p, g = v.patch, h // v.patch
        x = img.view(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * p * p)
        x = torch.cat([v.class_embedding.expand(n, 1, -1), v.patch_proj(x)], 1)
        x = x + v.position_embedding
        for b in v.blocks:
            x = b(x)
        return v.ln_post(x)

    def loss(self, ids, labels, img):
        with torch.no_grad():  # frozen: no graph, as the detached tower in candle
            feats = self.features(img)
        image = self.projector(feats[:, 1:])
        text = self.lm.embed_tokens(ids)
        q = image.shape[1]
        embeds = torch.cat([text[:, :IMAGE_AT], image, text[:, IMAGE_AT + q :]], 1)
        return next_token_loss(self.lm, self.lm.hidden_states(embeds), labels)


# ------------------------------------------------------------------ the bench


def bench(args, dev, name, what, tokens, opt, trained, loss_fn, json_fields):
    """Times the training step of `loss_fn`; `tokens` per step (batch x sequence length)."""
    cuda = dev.type == "cuda"

    def step(phases):
        t0 = time.perf_counter()
        with autocast(dev, args.dtype):
            loss = loss_fn()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        t3 = time.perf_counter()
        if phases is not None:
            for k, d in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2)):
                phases[k] += d
        return loss.detach()

    steps = args.steps or (CUDA_STEPS if cuda else CPU_STEPS)
    warmup = args.warmup if args.warmup is not None else (CUDA_WARMUP if cuda else CPU_WARMUP)
    r = measure(step, warmup, steps, dev)
    per, loss = r["per"], r["loss"]
    load_before = " ".join(r["load_before"].split()[:3])
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    n_trained = sum(p.numel() for p in trained)
    print(f"{name}: {what}; {n_trained} trained parameters")
    if cuda:
        print(gpu_summary(r, tokens, "tokens"))
    else:
        print(
            f"  {per * 1e3:.1f} ms/step, {tokens / per:.0f} tokens/s; loss {loss:.3f}; "
            f"load average {load_before} before, {load_after} after"
        )
        ms = {k: v * 1e3 / steps for k, v in r["phases"].items()}
        print(
            f"  phases: forward {ms['forward']:.1f} + backward {ms['backward']:.1f}"
            f" + clip/adamw {ms['optimizer']:.1f} ms"
        )
    if args.json:
        write_json(args.json, r, dev, model=args.model, dtype=args.dtype, attn=args.attn,
                   decoder="transformers" if args.hf else "own", rate="tokens_per_s",
                   **json_fields)


def groups(named, lr, weight_decay):
    return [
        {"params": [p for n, p in named if not no_decay(n)], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for n, p in named if no_decay(n)], "lr": lr, "weight_decay": 0.0},
    ]


def make_lm(args, m):
    cls = HfQwen2 if args.hf else Qwen2
    return cls(**m["lm"], attn=args.attn)


def run_vlm(args, dev, m):
    b, t = args.batch or m["batch"], args.vlm_tokens or m["vlm_tokens"]
    vocab, q = m["lm"]["vocab"], m["queries"]
    heads = args.resampler_heads or m["resampler_heads"]
    # The labels after the image; fewer than the model's default when --vlm-tokens is short.
    labelled = min(m["labelled"], t - 2 - IMAGE_AT - q)
    if labelled < 1:
        raise SystemExit(f"vlm: {t} tokens leave no labelled position after {q} image tokens at {IMAGE_AT}")
    with dev:  # parameters and inputs made on the device
        model = Vlm(make_lm(args, m), m["lm"]["width"], m["vision"], q, heads)
        model.vision.requires_grad_(False)
        proj = list(model.projector.named_parameters())
        lm = list(model.lm.named_parameters())
        (proj_lr, lm_lr), wd = m["vlm_lr"], m["vlm_wd"]
        opt = torch.optim.AdamW(
            groups(proj, proj_lr, wd) + groups(lm, lm_lr, wd), betas=(0.9, 0.98), eps=1e-6
        )
        trained = [p for _, p in proj + lm]
        size = m["vision"][0]
        img = torch.randn(b, 3, size, size)
        ids = torch.randint(0, vocab, (b, t))
        ids[:, IMAGE_AT : IMAGE_AT + q] = vocab - 1
        labels = torch.full((b, t), IGNORE)
        labels[:, t - 2 - labelled : t - 2] = ids[:, t - 2 - labelled : t - 2]
    n_params = sum(p.numel() for p in model.parameters())
    bench(
        args, dev, "vlm (finetune)",
        f"batch {b} x {t} tokens (image at {IMAGE_AT}..{IMAGE_AT + q}, {labelled} labelled), "
        f"{n_params} params, vision frozen",
        b * t, opt, trained, lambda: model.loss(ids, labels, img),
        dict(bench="finetune", batch=b, tokens=t),
    )


def run_lm(args, dev, m):
    b, t = args.batch or m["batch"], args.lm_tokens or m["lm_tokens"]
    with dev:
        model = make_lm(args, m)
        named = list(model.named_parameters())
        opt = torch.optim.AdamW(groups(named, 2e-3, 0.05), betas=(0.9, 0.98), eps=1e-6)
        ids = torch.randint(0, m["lm"]["vocab"], (b, t))

    def loss():
        return next_token_loss(model, model.hidden_states(model.embed_tokens(ids)), ids)

    n_params = sum(p.numel() for _, p in named)
    bench(
        args, dev, "lm (lm-train)", f"batch {b} x {t} tokens, all labelled, {n_params} params",
        b * t, opt, [p for _, p in named], loss, dict(bench="lm", batch=b, tokens=t),
    )


def run_attention(args, dev, m):
    b, t = args.batch or m["batch"], args.lm_tokens or m["lm_tokens"]
    lm = m["lm"]
    h, kv, layers = lm["heads"], lm["kv_heads"], lm["layers"]
    d = lm["width"] // h
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
    with dev:
        q = torch.randn(b, h, t, d, dtype=dtype, requires_grad=True)
        k = torch.randn(b, kv, t, d, dtype=dtype, requires_grad=True)
        v = torch.randn(b, kv, t, d, dtype=dtype, requires_grad=True)
        mask = torch.full((t, t), float("-inf"), dtype=dtype).triu(1)
    fwd = bwd = 0.0
    steps = args.steps or (CUDA_STEPS if dev.type == "cuda" else CPU_STEPS)
    for i in range(steps + 2):
        sync()
        t0 = time.perf_counter()
        kk, vv = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        if args.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
        else:
            y = torch.softmax((q / math.sqrt(d)) @ kk.transpose(-1, -2) + mask, dim=-1) @ vv
        y = y.transpose(1, 2).reshape(b, t, h * d)
        sync()
        t1 = time.perf_counter()
        y.sum().backward()
        sync()
        t2 = time.perf_counter()
        if i >= 2:
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
    ms = lambda x: x * 1e3 * layers / steps
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"attention (the lm step's {layers} layers): batch {b} x {t} tokens, {h} heads / {kv} key-value heads, causal")
    print(f"  forward {ms(fwd):.1f} + backward {ms(bwd):.1f} = {ms(fwd + bwd):.1f} ms per step; load average {load}")


def check_hf():
    """The decoder below computes what transformers' Qwen2Model does."""
    torch.manual_seed(0)
    hf = HfQwen2(**QWEN2_SMALL)
    state = {
        k.replace("mlp.", "").replace("self_attn.", ""): v for k, v in hf.model.state_dict().items()
    }
    x = torch.randn(3, 20, QWEN2_SMALL["width"])
    with torch.no_grad():
        ref = hf.hidden_states(x)
        for attn in ("sdpa", "math"):
            own = Qwen2(**QWEN2_SMALL, attn=attn)
            own.load_state_dict(state, strict=True)
            diff = (own.hidden_states(x) - ref).abs().max().item()
            print(f"own Qwen2 ({attn}) vs transformers Qwen2Model: max |difference| {diff:.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("only", nargs="*", help="vlm, lm (default: both), attention")
    ap.add_argument("--model", choices=sorted(MODELS), default="small",
                    help="small (the CPU default) or qwen2.5-0.5b (benches/gpu.rs's finetune shape)")
    ap.add_argument("--steps", type=int, help="timed steps (10; 20 on cuda)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on cuda)")
    ap.add_argument("--batch", type=int, help="64; 8 for qwen2.5-0.5b")
    ap.add_argument("--vlm-tokens", type=int, help="88; 512 for qwen2.5-0.5b")
    ap.add_argument("--lm-tokens", type=int, help="100; 512 for qwen2.5-0.5b")
    ap.add_argument("--resampler-heads", type=int, help="4; 14 for qwen2.5-0.5b")
    ap.add_argument("--attn", choices=["sdpa", "math"], default="sdpa")
    ap.add_argument("--hf", action="store_true", help="transformers' Qwen2Model as the decoder")
    ap.add_argument("--check-hf", action="store_true", help="compare the decoder with transformers'")
    add_device_args(ap)
    args = ap.parse_args()
    if args.check_hf:
        return check_hf()
    if set(args.only) - {"vlm", "lm", "attention"}:
        ap.error(f"unknown step {args.only}: vlm, lm or attention")
    m = MODELS[args.model]
    dev = setup_device(args)
    torch.manual_seed(0)
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    decoder = "transformers Qwen2Model" if args.hf else "own Qwen2"
    where = f"threads {torch.get_num_threads()}" if dev.type == "cpu" else gpu_name(dev)
    if args.model != "small" or dev.type != "cpu" or args.dtype != "f32":
        where += f", model {args.model}, {args.device} {args.dtype}"
    print(
        f"vlm_step_torch: torch {torch.__version__}, {where}, "
        f"{decoder}, attention {args.attn}, load average {load}"
    )
    if not args.only or "vlm" in args.only:
        run_vlm(args, dev, m)
    if not args.only or "lm" in args.only:
        run_lm(args, dev, m)
    if "attention" in args.only:
        run_attention(args, dev, m)


if __name__ == "__main__":
    main()
