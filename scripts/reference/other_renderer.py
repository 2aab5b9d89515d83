#!/usr/bin/env python3
"""Shape images drawn by other code than vlmflow's generator, with the four questions the default
pipeline learns to answer: does the model generalise past its own renderer?

PIL's rasteriser (no supersampling, no pixel noise), its own geometry for each shape, other
shades of each colour name, flat or gradient backgrounds, 64, 96 and 224 px, and every shape's
centre anywhere in the middle 80% of its 3×3 cell (so that its position label is decidable, as
in the generator's `placement = "anywhere"`). Sizes keep the generator's proportions: small
shapes a radius of 12–16% of the image, large ones 28–34%.

Writes tests/fixtures/other_renderer/: images/NNN.png and questions.jsonl (vqa-eval's format,
`category` = the question kind).

    /tmp/venv/bin/python scripts/reference/other_renderer.py     # pillow
"""

import json
import pathlib
import random

from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "other_renderer"
COUNT = 60

SHAPES = ["circle", "square", "triangle", "cross", "diamond"]
COLOURS = {
    "red": (205, 30, 45),
    "green": (40, 150, 70),
    "blue": (35, 85, 200),
    "yellow": (240, 215, 40),
    "purple": (125, 60, 165),
    "orange": (240, 120, 30),
}
POSITIONS = [
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
]
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is it?",
    "position": "Where is the shape?",
    "size": "How big is the shape?",
}


def background(rng, size):
    top = [rng.randint(200, 250) for _ in range(3)]
    if rng.random() < 0.5:
        return Image.new("RGB", (size, size), tuple(top))
    bottom = [min(255, max(190, c + rng.randint(-30, 30))) for c in top]
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(round(a + t * (b - a)) for a, b in zip(top, bottom)))
    return image


def draw_shape(draw, shape, cx, cy, r, fill):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.8 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.95 * r, cy + 0.75 * r), (cx - 0.95 * r, cy + 0.75 * r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.9 * r, cy), (cx, cy + r), (cx - 0.9 * r, cy)], fill=fill)
    elif shape == "cross":
        arm = 0.3 * r
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=fill)
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=fill)


def main():
    rng = random.Random(20261206)
    (ROOT / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(COUNT):
        size = [64, 96, 224][i % 3]
        shape = SHAPES[i % 5]
        colour = rng.choice(list(COLOURS))
        big = rng.random() < 0.5
        position = POSITIONS[rng.randrange(9)]
        r = size * (rng.uniform(0.28, 0.34) if big else rng.uniform(0.12, 0.16))
        pad = r + 0.04 * size
        spacing = (size - 2 * pad) / 2
        col, row = POSITIONS.index(position) % 3, POSITIONS.index(position) // 3
        cx = pad + col * spacing + rng.uniform(-0.4, 0.4) * spacing
        cy = pad + row * spacing + rng.uniform(-0.4, 0.4) * spacing
        cx, cy = min(max(cx, r), size - r), min(max(cy, r), size - r)
        fill = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour])
        image = background(rng, size)
        draw_shape(ImageDraw.Draw(image), shape, cx, cy, r, fill)
        name = f"images/{i:03d}.png"
        image.save(ROOT / name)
        answers = {"colour": colour, "shape": shape, "position": position, "size": "large" if big else "small"}
        for kind, question in QUESTIONS.items():
            lines.append({"image": name, "question": question, "answer": answers[kind], "category": kind})
    with open(ROOT / "questions.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
