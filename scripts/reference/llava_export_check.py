#!/usr/bin/env python3
"""Loads a chat bundle's `llava/` folder with transformers, as lmms-eval and VLMEvalKit load a
LLaVA model (`AutoProcessor`, `LlavaForConditionalGeneration`), and checks it against what
vlmflow computed for the same image and question (`tests/llava_export.rs` writes that file):

  - every weight loads: none missing, none unexpected, none of another shape;
  - the processor's chat template and image-token expansion give vlmflow's token ids;
  - the logits at every position agree within --tolerance (absolute, f32);
  - greedy generation gives vlmflow's answer tokens.

    python scripts/reference/llava_export_check.py BUNDLE/llava IMAGE vlmflow.json

vlmflow.json: {"question": str, "ids": [int], "logits": [[float]], "answer_ids": [int]}.
Prints one JSON line with what it measured; exits 1 when a check fails.
"""

import argparse
import json
import sys

import torch
import transformers
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration


def main():
    args = argparse.ArgumentParser()
    args.add_argument("export")
    args.add_argument("image")
    args.add_argument("vlmflow")
    args.add_argument("--tolerance", type=float, default=1e-4)
    a = args.parse_args()
    want = json.load(open(a.vlmflow))

    processor = AutoProcessor.from_pretrained(a.export)
    model, loading = LlavaForConditionalGeneration.from_pretrained(
        a.export, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if loading.get(what):
            problems.append(f"{what}: {sorted(loading[what])[:8]}")

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": want["question"]}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.open(a.image), text=text, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    if ids != want["ids"]:
        problems.append(f"token ids differ:\n  transformers {ids}\n  vlmflow      {want['ids']}")

    with torch.no_grad():
        logits = model(**inputs).logits[0].double()
        expected = torch.tensor(want["logits"], dtype=torch.float64)
        diff = (logits - expected).abs().max().item() if logits.shape == expected.shape else None
        answer = model.generate(
            **inputs, max_new_tokens=len(want["answer_ids"]) + 1, do_sample=False
        )[0, inputs["input_ids"].shape[1]:].tolist()
    if diff is None:
        problems.append(f"logits of shape {tuple(logits.shape)}, vlmflow's {tuple(expected.shape)}")
    elif diff > a.tolerance:
        problems.append(f"logits differ by up to {diff:.3g} (tolerance {a.tolerance})")
    # transformers stops at the first stop token and keeps it; vlmflow's answer leaves it out.
    if answer[: len(want["answer_ids"])] != want["answer_ids"]:
        problems.append(f"greedy answer {answer}, vlmflow's {want['answer_ids']}")

    print(json.dumps({
        "export": a.export,
        "transformers": transformers.__version__,
        "tokens": len(ids),
        "logits_max_abs_diff": diff,
        "logit_scale": logits.abs().max().item(),
        "answer": processor.tokenizer.decode(answer, skip_special_tokens=True),
        "problems": problems,
    }))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
