#!/usr/bin/env python3
"""Independent reference for vlmflow's ViT running Hugging Face CLIP and SigLIP vision towers.

Builds a tiny random `CLIPVisionModel` and a tiny random `SiglipModel` (text tower and pooling
head included, which vlmflow must skip) and writes each as a Hugging Face folder under
tests/fixtures/vision_reference/<case>/ (`config.json`, `model.safetensors` by `save_pretrained`)
with `expected.safetensors`: fixed input pixels and the hidden states `transformers` computes
for them. `src/ml/models/vision_reference_tests.rs` loads the folders with vlmflow's loader and
checks agreement within 1e-4.

    /tmp/venv-bench/bin/python scripts/reference/vision_reference.py   # torch, transformers 5

Cases:
  clip    CLIPVisionModel as transformers 5 saves it (tensor names without `vision_model.`),
          f16 weights on disk, quick_gelu, an MLP 1.5x wide, 2 layers; no preprocessor config
          (OpenAI CLIP's normalisation is the default)
  siglip  SiglipModel (vision tower under `vision_model.`, plus text tower and head), bf16
          weights on disk, gelu_pytorch_tanh, LayerNorm eps 1e-6, 2 layers, no CLS token;
          `preprocessor_config.json` as SiglipImageProcessor writes it (mean = std = 0.5)

Weights are redrawn at a useful scale (the default init gives near-constant hidden states that
would hide mistakes) and rounded to the case's dtype, and the reference runs in float64 with
eager attention, so the numbers checked are the Rust side's error only.

Inputs are u8 CHW pixels, as vlmflow's shards store them. The reference normalises them the
way the checkpoint's image processor does, (p/255 - mean)/std in float64; vlmflow normalises
with CLIP's mean/std and re-normalises inside the tower for SigLIP.

Expected tensors (names in expected.safetensors):
  pixels (2, 3, 32, 32) u8            -> last: post_layernorm(hidden_states[-1]) (2, T, C),
                                         penultimate: hidden_states[-2] (2, T, C)
  pixels_resized (1, 3, S, S) u8      -> resized_last: as `last`, with interpolate_pos_encoding
                                         (S = 48 for clip: a grid of 6 from 4; 24 for siglip: 3)
T counts the CLS token first for CLIP; SigLIP has none.
"""

import copy
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
)

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "vision_reference"

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_case():
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attn_implementation="eager",
    )
    model = CLIPVisionModel(cfg).eval()
    return model, model, torch.float16, (OPENAI_MEAN, OPENAI_STD), 48


def siglip_case():
    cfg = SiglipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        text_config=dict(
            vocab_size=16,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=4,
            projection_size=32,
        ),
        attn_implementation="eager",
    )
    model = SiglipModel(cfg).eval()
    return model, model.vision_model, torch.bfloat16, ([0.5] * 3, [0.5] * 3), 24


CASES = {"clip": clip_case, "siglip": siglip_case}


def randomize(model, dtype):
    """Matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), norm gains ~ 1 + N(0, 0.1²), embeddings
    and the rest ~ N(0, 0.5²); rounded to `dtype` (what goes on disk)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.1 * z
            elif name.endswith("bias"):
                v = 0.1 * z
            elif p.dim() >= 2 and "embedding" not in name:
                v = z / (p[0].numel() ** 0.5)
            else:
                v = 0.5 * z
            p.copy_(v.to(dtype).to(p.dtype))


def normalise(pixels, mean, std):
    x = pixels.to(torch.float64) / 255.0
    m = torch.tensor(mean, dtype=torch.float64)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float64)[None, :, None, None]
    return (x - m) / s


def main():
    for case, build in CASES.items():
        torch.manual_seed(1)
        model, tower, dtype, (mean, std), resized = build()
        randomize(model, dtype)
        out = ROOT / case
        out.mkdir(parents=True, exist_ok=True)
        copy.deepcopy(model).to(dtype).save_pretrained(out, safe_serialization=True)
        if case == "siglip":
            # SiglipImageProcessor's defaults (written by hand: it needs PIL and torchvision).
            processor = {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": {"height": 32, "width": 32},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            }
            (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        model.to(torch.float64)

        g = torch.Generator().manual_seed(2)
        pixels = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
        pixels_resized = torch.randint(
            0, 256, (1, 3, resized, resized), generator=g, dtype=torch.uint8
        )
        with torch.no_grad():
            o = tower(pixel_values=normalise(pixels, mean, std), output_hidden_states=True)
            last = tower.post_layernorm(o.hidden_states[-1])
            penultimate = o.hidden_states[-2]
            o = tower(
                pixel_values=normalise(pixels_resized, mean, std),
                output_hidden_states=True,
                interpolate_pos_encoding=True,
            )
            resized_last = tower.post_layernorm(o.hidden_states[-1])
        f32 = lambda t: t.to(torch.float32).contiguous()
        save_file(
            {
                "pixels": pixels,
                "last": f32(last),
                "penultimate": f32(penultimate),
                "pixels_resized": pixels_resized,
                "resized_last": f32(resized_last),
            },
            out / "expected.safetensors",
            metadata={
                "generator": f"scripts/reference/vision_reference.py, torch {torch.__version__}"
            },
        )
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"wrote {out} ({size} bytes)")


if __name__ == "__main__":
    main()
