#!/usr/bin/env python3
"""Independent reference values for vlmflow's ML building blocks, computed with PyTorch.

Writes tests/fixtures/clip_reference.json: small fixed inputs and what PyTorch computes from
them (values and gradients). `src/ml/reference_tests.rs` loads the file and checks the candle
code agrees within 1e-5.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch
    /tmp/venv/bin/python scripts/reference/clip_reference.py

Everything is float64 in PyTorch (so the reference is exact to well below the tolerance) from
float32-representable inputs.
"""

import json
import math
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(0)
DT = torch.float64
OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clip_reference.json"


def rand(*shape, std=1.0):
    # Round through float32 so the Rust side reads exactly the same numbers.
    return (torch.randn(*shape, dtype=torch.float32) * std).to(DT)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def leaf(t):
    return t.clone().requires_grad_(True)


def contrastive_case(n, dim, logit_scale):
    """OpenCLIP's loss: L2-normalise, logits = exp(min(s, ln 100)) * I Tᵀ, symmetric CE."""
    img, txt = leaf(rand(n, dim)), leaf(rand(n, dim))
    s = leaf(torch.tensor(logit_scale, dtype=DT))
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    scale = torch.clamp(s, max=math.log(100.0)).exp()
    logits = scale * i @ t.T
    labels = torch.arange(n)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    return {
        "n": n,
        "dim": dim,
        "image": flat(img),
        "text": flat(txt),
        "logit_scale": logit_scale,
        "loss": loss.item(),
        "grad_image": flat(img.grad),
        "grad_text": flat(txt.grad),
        "grad_logit_scale": s.grad.item(),
    }


def attention_case(n, heads, t, d, lengths, causal):
    """softmax(q kᵀ/√d + mask) v with masked positions filled by -inf, PyTorch style."""
    q, k, v = leaf(rand(n, heads, t, d)), leaf(rand(n, heads, t, d)), leaf(rand(n, heads, t, d))
    keep = torch.ones(n, 1, t, t, dtype=torch.bool)
    if lengths is not None:
        keep &= (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    if causal:
        keep &= torch.tril(torch.ones(t, t, dtype=torch.bool))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~keep, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    upstream = rand(*out.shape)
    (out * upstream).sum().backward()
    return {
        "shape": [n, heads, t, d],
        "lengths": lengths,
        "causal": causal,
        "q": flat(q),
        "k": flat(k),
        "v": flat(v),
        "upstream": flat(upstream),
        "out": flat(out),
        "grad_q": flat(q.grad),
        "grad_k": flat(k.grad),
        "grad_v": flat(v.grad),
    }


def layer_norm_gelu_case(rows, cols):
    """gelu_tanh(layer_norm(x, w, b)), the MLP's first half, with gradients."""
    x = leaf(rand(rows, cols) + 0.3)
    w = leaf(1.0 + rand(cols, std=0.2))
    b = leaf(rand(cols, std=0.2))
    y = F.gelu(F.layer_norm(x, (cols,), w, b, eps=1e-5) * 2.0, approximate="tanh")
    upstream = rand(rows, cols)
    (y * upstream).sum().backward()
    return {
        "rows": rows,
        "cols": cols,
        "x": flat(x),
        "w": flat(w),
        "b": flat(b),
        "upstream": flat(upstream),
        "out": flat(y),
        "grad_x": flat(x.grad),
        "grad_w": flat(w.grad),
        "grad_b": flat(b.grad),
    }


def adamw_case(steps):
    """torch.optim.AdamW on a decayed weight and an undecayed bias, with given gradients."""
    lr, betas, eps, wd = 0.01, (0.9, 0.98), 1e-6, 0.1
    w, b = leaf(rand(3, 4)), leaf(rand(4))
    w0, b0 = flat(w), flat(b)
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
        lr=lr,
        betas=betas,
        eps=eps,
    )
    grads = []
    for _ in range(steps):
        gw, gb = rand(3, 4), rand(4)
        grads.append({"w": flat(gw), "b": flat(gb)})
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    return {
        "lr": lr,
        "beta1": betas[0],
        "beta2": betas[1],
        "eps": eps,
        "weight_decay": wd,
        "w0": w0,
        "b0": b0,
        "grads": grads,
        "w": flat(w),
        "b": flat(b),
    }


def main():
    fixture = {
        "generator": f"scripts/reference/clip_reference.py, torch {torch.__version__}",
        "contrastive": [contrastive_case(6, 8, math.log(1 / 0.07)), contrastive_case(4, 5, 5.0)],
        "attention": [
            attention_case(2, 2, 5, 4, [5, 3], causal=True),
            attention_case(2, 3, 4, 4, [2, 4], causal=False),
            attention_case(1, 2, 5, 4, None, causal=False),
        ],
        "layer_norm_gelu": layer_norm_gelu_case(5, 16),
        "adamw": adamw_case(3),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
