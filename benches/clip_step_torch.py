#!/usr/bin/env python3
"""The same CLIP training step as benches/clip_step.rs, in PyTorch eager, for comparison.

`small` config (32-px images, 8-px patches, ViT 128×4 layers×4 heads; causal text 128×3×4;
embed 64), batch 64, 16-token captions, forward + backward + clip-norm + AdamW, 2 threads.
`--model vit-b16`: ViT-B/16's shape (224-px images, 16-px patches, ViT 768×12×12; text
512×12×8 over CLIP's 49,408-token vocabulary, 77-token captions; embed 512), batch 8.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch
    /tmp/venv/bin/python benches/clip_step_torch.py [--model vit-b16] [--steps 10] [--threads 2]
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(width, width) for _ in range(4)
        )

    def forward(self, x, mask):
        n, t, c = x.shape
        split = lambda y: y.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = (q / math.sqrt(c // self.heads)) @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        y = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(n, t, c))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.ln_2(x)), approximate="tanh"))


class Vit(nn.Module):
    def __init__(self, size=32, patch=8, width=128, layers=4, heads=4):
        super().__init__()
        self.patch, grid = patch, size // patch
        self.patch_proj = nn.Linear(3 * patch * patch, width, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
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
    def __init__(self, vocab=64, max_len=32, width=128, layers=3, heads=4):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Parameter(torch.randn(max_len, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens, lengths):
        n, t = tokens.shape
        x = self.token_embedding(tokens) + self.position_embedding[:t]
        mask = torch.full((t, t), -1e9).triu(1)
        for b in self.blocks:
            x = b(x, mask)
        return self.ln_final(x[torch.arange(n), lengths - 1])


# (vision: size, patch, width, layers, heads; text: vocab, max_len, width, layers, heads; embed),
# as `ClipConfig::small` / `ClipConfig::vit_b16`; plus the bench's batch, caption length, steps.
MODELS = {
    "small": dict(vision=(32, 8, 128, 4, 4), text=(64, 32, 128, 3, 4), embed=64,
                  batch=64, tokens=16, steps=10),
    "vit-b16": dict(vision=(224, 16, 768, 12, 12), text=(49408, 77, 512, 12, 8), embed=512,
                    batch=8, tokens=77, steps=3),
}


class Clip(nn.Module):
    def __init__(self, vision=MODELS["small"]["vision"], text=MODELS["small"]["text"], embed=64):
        super().__init__()
        self.vision, self.text = Vit(*vision), Text(*text)
        self.visual_projection = nn.Linear(vision[2], embed, bias=False)
        self.text_projection = nn.Linear(text[2], embed, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, img, tokens, lengths):
        i = F.normalize(self.visual_projection(self.vision(img)), dim=-1)
        t = F.normalize(self.text_projection(self.text(tokens, lengths)), dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * i @ t.T
        labels = torch.arange(len(img))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def no_decay(name):
    last = name.split(".")[-1]
    return (
        last in ("bias", "logit_scale")
        or "embedding" in last
        or any(s.startswith("ln") or "norm" in s for s in name.split("."))
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), default="small")
    ap.add_argument("--steps", type=int, help="timed steps (10; 3 for vit-b16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, help="64; 8 for vit-b16")
    ap.add_argument("--tokens", type=int, help="caption length: 16; 77 for vit-b16")
    args = ap.parse_args()
    m = MODELS[args.model]
    steps = args.steps or m["steps"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Clip(m["vision"], m["text"], m["embed"])
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
    b, t = args.batch or m["batch"], args.tokens or m["tokens"]
    size, vocab = m["vision"][0], m["text"][0]
    img = torch.randn(b, 3, size, size)
    tokens = torch.randint(0, vocab, (b, t))
    lengths = torch.randint(4, t + 1, (b,))

    def step(phases):
        t0 = time.perf_counter()
        loss = model.loss(img, tokens, lengths)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        for k, d in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2)):
            phases[k] += d
        return loss.item()

    for _ in range(2 if steps > 3 else 1):
        step({"forward": 0, "backward": 0, "optimizer": 0})
    load_before = open("/proc/loadavg").read().strip()
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(phases)
    per = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in model.parameters())
    print(f"load average {open('/proc/loadavg').read().strip()} (before the timed steps: {load_before})")
    print(
        f"clip_step_torch {args.model}: batch {b}, {t} tokens, vocabulary {vocab}, {n_params} params, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    ms = {k: v * 1e3 / steps for k, v in phases.items()}
    print(
        f"  {per * 1e3:.1f} ms/step ({b / per:.{2 if b / per < 100 else 0}f} samples/s) = forward {ms['forward']:.1f}"
        f" + backward {ms['backward']:.1f} + clip/adamw {ms['optimizer']:.1f} ms; loss {loss:.3f}"
    )


if __name__ == "__main__":
    main()
