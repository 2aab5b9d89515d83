#!/usr/bin/env python3
"""The same VLM and LM training steps as benches/vlm_step.rs, in PyTorch eager, for comparison.

- vlm: the default finetune model. The `small` CLIP's ViT (32 px, 8-px patches, 128 wide,
  4 layers, 4 heads; pre-LN, CLS token), frozen; a resampler (16 learned queries, kv_proj,
  LayerNorms, 4-head attention, ln_post, proj); a Qwen2 decoder (vocabulary 512, 2 layers,
  128 wide, 4 query / 2 key-value heads, q/k/v biases, RoPE, RMSNorm, SwiGLU 512, tied
  embeddings). 64 images and 88-token sequences, the 16 image embeddings at column 4, the loss on
  20 labelled positions per row; projector (lr 1e-3) and LM (lr 3e-4) train, no weight decay.
- lm: the `lm-train` step. The same Qwen2 on 64 x 100 tokens, every position labelled,
  lr 2e-3, weight decay 0.05 (not on norms and biases, as vlmflow's `no_decay`).

Both: logits only at labelled positions, cross-entropy, backward, clip_grad_norm_(1.0),
AdamW(betas 0.9/0.98, eps 1e-6). Tokens/s counts every sequence position.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch
    /tmp/venv/bin/python benches/vlm_step_torch.py [vlm|lm|attention] [--steps 10] [--threads 2]
        [--attn sdpa|math] [--hf]

`attention` (only when named): the lm step's two layers of causal grouped-query attention alone
(key/value heads repeated, then attention), forward and backward, as in vlm_step.rs.

--attn: the decoder's attention as F.scaled_dot_product_attention (what transformers uses by
default) or written out (matmul, mask, softmax, matmul). --hf: the decoder is transformers'
Qwen2Model (pip install transformers) instead of the one below. --check-hf: load one Qwen2Model's
weights into the decoder below (both attentions) and print the largest difference of their hidden
states, then exit.
"""

import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # importing the CLIP twin leaves no __pycache__ in benches/
from clip_step_torch import Attention, Vit, no_decay  # noqa: E402

VOCAB, IMAGE_AT, LABELLED, IGNORE = 512, 4, 20, -100
QWEN2_SMALL = dict(vocab=VOCAB, width=128, layers=2, heads=4, kv_heads=2, hidden=512, theta=1e4, eps=1e-6)


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
        inv = self.theta ** (-torch.arange(0, self.d, 2, dtype=torch.float32) / self.d)
        freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((t, t), float("-inf")).triu(1)
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
    def __init__(self, lm):
        super().__init__()
        self.vision = Vit(32, 8, 128, 4, 4)
        self.projector = Resampler(128, QWEN2_SMALL["width"])
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


def bench(name, what, tokens, model, opt, trained, loss_fn, steps):
    def step(phases):
        t0 = time.perf_counter()
        loss = loss_fn()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        t3 = time.perf_counter()
        for k, d in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2)):
            phases[k] += d
        return loss.item()

    for _ in range(2):
        step({"forward": 0, "backward": 0, "optimizer": 0})
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(phases)
    per = (time.perf_counter() - start) / steps
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    n_trained = sum(p.numel() for p in trained)
    print(f"{name}: {what}; {n_trained} trained parameters")
    print(
        f"  {per * 1e3:.1f} ms/step, {tokens / per:.0f} tokens/s; loss {loss:.3f}; "
        f"load average {load_before} before, {load_after} after"
    )
    ms = {k: v * 1e3 / steps for k, v in phases.items()}
    print(
        f"  phases: forward {ms['forward']:.1f} + backward {ms['backward']:.1f}"
        f" + clip/adamw {ms['optimizer']:.1f} ms"
    )


def groups(named, lr, weight_decay):
    return [
        {"params": [p for n, p in named if not no_decay(n)], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for n, p in named if no_decay(n)], "lr": lr, "weight_decay": 0.0},
    ]


def make_lm(args):
    cls = HfQwen2 if args.hf else Qwen2
    return cls(**QWEN2_SMALL, attn=args.attn)


def run_vlm(args):
    b, t = args.batch, args.vlm_tokens
    model = Vlm(make_lm(args))
    model.vision.requires_grad_(False)
    proj = list(model.projector.named_parameters())
    lm = list(model.lm.named_parameters())
    opt = torch.optim.AdamW(
        groups(proj, 1e-3, 0.0) + groups(lm, 3e-4, 0.0), betas=(0.9, 0.98), eps=1e-6
    )
    trained = [p for _, p in proj + lm]
    img = torch.randn(b, 3, 32, 32)
    ids = torch.randint(0, VOCAB, (b, t))
    ids[:, IMAGE_AT : IMAGE_AT + 16] = VOCAB - 1
    labels = torch.full((b, t), IGNORE)
    labels[:, t - 2 - LABELLED : t - 2] = ids[:, t - 2 - LABELLED : t - 2]
    n_params = sum(p.numel() for p in model.parameters())
    bench(
        "vlm (finetune)",
        f"batch {b} x {t} tokens (image at {IMAGE_AT}..{IMAGE_AT + 16}, {LABELLED} labelled), "
        f"{n_params} params, vision frozen",
        b * t, model, opt, trained, lambda: model.loss(ids, labels, img), args.steps,
    )


def run_lm(args):
    b, t = args.batch, args.lm_tokens
    model = make_lm(args)
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(groups(named, 2e-3, 0.05), betas=(0.9, 0.98), eps=1e-6)
    ids = torch.randint(0, VOCAB, (b, t))

    def loss():
        return next_token_loss(model, model.hidden_states(model.embed_tokens(ids)), ids)

    n_params = sum(p.numel() for _, p in named)
    bench(
        "lm (lm-train)", f"batch {b} x {t} tokens, all labelled, {n_params} params",
        b * t, model, opt, [p for _, p in named], loss, args.steps,
    )


def run_attention(args):
    b, t = args.batch, args.lm_tokens
    h, kv, d, layers = QWEN2_SMALL["heads"], QWEN2_SMALL["kv_heads"], 32, QWEN2_SMALL["layers"]
    q = torch.randn(b, h, t, d, requires_grad=True)
    k = torch.randn(b, kv, t, d, requires_grad=True)
    v = torch.randn(b, kv, t, d, requires_grad=True)
    mask = torch.full((t, t), float("-inf")).triu(1)
    fwd = bwd = 0.0
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        kk, vv = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        if args.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
        else:
            y = torch.softmax((q / math.sqrt(d)) @ kk.transpose(-1, -2) + mask, dim=-1) @ vv
        y = y.transpose(1, 2).reshape(b, t, h * d)
        t1 = time.perf_counter()
        y.sum().backward()
        t2 = time.perf_counter()
        if i >= 2:
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
    ms = lambda x: x * 1e3 * layers / args.steps
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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vlm-tokens", type=int, default=88)
    ap.add_argument("--lm-tokens", type=int, default=100)
    ap.add_argument("--attn", choices=["sdpa", "math"], default="sdpa")
    ap.add_argument("--hf", action="store_true", help="transformers' Qwen2Model as the decoder")
    ap.add_argument("--check-hf", action="store_true", help="compare the decoder with transformers'")
    args = ap.parse_args()
    if args.check_hf:
        return check_hf()
    if set(args.only) - {"vlm", "lm", "attention"}:
        ap.error(f"unknown step {args.only}: vlm, lm or attention")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    decoder = "transformers Qwen2Model" if args.hf else "own Qwen2"
    print(
        f"vlm_step_torch: torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{decoder}, attention {args.attn}, load average {load}"
    )
    if not args.only or "vlm" in args.only:
        run_vlm(args)
    if not args.only or "lm" in args.only:
        run_lm(args)
    if "attention" in args.only:
        run_attention(args)


if __name__ == "__main__":
    main()
