#!/usr/bin/env python3
"""Independent reference for vlmflow's Qwen2 decoder, computed with Hugging Face `transformers`.

Builds two tiny random `Qwen2ForCausalLM` models and writes each as a Hugging Face folder under
tests/fixtures/qwen2_reference/<case>/ (`config.json`, `model.safetensors` by `save_pretrained`)
with `expected.safetensors`: fixed inputs and the logits `transformers` computes for them.
`src/ml/models/qwen2_reference_tests.rs` loads the folders with vlmflow's loader and checks the
logits agree within 1e-4.

    python3 -m venv /tmp/venv-lm && /tmp/venv-lm/bin/pip install torch transformers safetensors
    /tmp/venv-lm/bin/python scripts/reference/qwen2_reference.py

Cases:
  untied     f32 weights, separate lm_head, 4 query heads sharing 2 key/value heads
  tied_bf16  bf16 weights on disk, tied embeddings (no lm_head), 4 query heads sharing 1

Weights are redrawn at a useful scale (the default init, std 0.02, gives near-zero logits that
would hide mistakes), the reference runs in float64 with eager attention, and every input is
float32-representable, so the numbers checked are the Rust side's error only (except the
left-padded case, computed in float32: see below).

Expected tensors (names in expected.safetensors):
  ids (2, 9) i64            -> logits (2, 9, V)
  pad_ids (2, 9) i64, pad_left (2) i64: row r's first pad_left[r] columns are padding (masked
                            out, positions counted from the first real token) -> pad_logits
                            (zero at the pad positions)
  embeds (2, 5, C) f32      -> embeds_logits (2, 5, V)   (inputs_embeds instead of ids)
  prompt (1, 6) i64         -> greedy (1, 12): argmax continuation, full recompute each step
"""

import copy
import pathlib

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "qwen2_reference"

CASES = {
    "untied": dict(
        config=dict(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_theta=10000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
        dtype=torch.float32,
    ),
    "tied_bf16": dict(
        config=dict(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            max_position_embeddings=64,
            rope_theta=1000000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=[2, 3],
        ),
        dtype=torch.bfloat16,
    ),
}


def randomize(model, dtype, tied):
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), norm gains ~ 1 + N(0, 0.1²), embeddings
    ~ N(0, 1); rounded to `dtype` (what goes on disk)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                # Tied: the same matrix reads the output, and at std 1 every token predicts
                # itself; a smaller scale keeps greedy continuations varied.
                v = torch.randn(p.shape, generator=g) * (0.1 if tied else 1.0)
            else:
                v = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
            p.copy_(v.to(dtype).to(p.dtype))


def main():
    for case, spec in CASES.items():
        torch.manual_seed(1)
        cfg = Qwen2Config(**spec["config"], attn_implementation="eager")
        model = Qwen2ForCausalLM(cfg).eval()
        randomize(model, spec["dtype"], cfg.tie_word_embeddings)
        out = ROOT / case
        out.mkdir(parents=True, exist_ok=True)
        # A copy goes to disk in the case's dtype: `.to()` would also round the model's rotary
        # frequency buffer, which transformers keeps in f32 when it loads a bf16 checkpoint.
        copy.deepcopy(model).to(spec["dtype"]).save_pretrained(out, safe_serialization=True)
        model = model.to(torch.float64)

        v, c = cfg.vocab_size, cfg.hidden_size
        ids = torch.randint(0, v, (2, 9))
        pad_ids = torch.randint(0, v, (2, 9))
        pad_left = torch.tensor([0, 3])
        mask = (torch.arange(9)[None, :] >= pad_left[:, None]).long()
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as transformers' generate
        embeds = torch.randn(2, 5, c).to(torch.float32)
        prompt = torch.randint(0, v, (1, 6))
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            # In float64, transformers' eager attention turns fully masked (pad) query rows
            # into NaN, which then reaches every row through the pads' values; float32 does not.
            pad_logits = copy.deepcopy(model).float()(
                input_ids=pad_ids, attention_mask=mask, position_ids=positions
            ).logits.double()
            embeds_logits = model(inputs_embeds=embeds.to(torch.float64)).logits
            seq = prompt
            for _ in range(12):
                nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], 1)
        pad_logits[mask == 0] = 0.0  # pad positions: nothing reads them
        f32 = lambda t: t.to(torch.float32).contiguous()
        save_file(
            {
                "ids": ids,
                "logits": f32(logits),
                "pad_ids": pad_ids,
                "pad_left": pad_left,
                "pad_logits": f32(pad_logits),
                "embeds": f32(embeds),
                "embeds_logits": f32(embeds_logits),
                "prompt": prompt,
                "greedy": seq[:, 6:].contiguous(),
            },
            out / "expected.safetensors",
            metadata={"generator": f"scripts/reference/qwen2_reference.py, torch {torch.__version__}"},
        )
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"wrote {out} ({size} bytes)")


if __name__ == "__main__":
    main()
