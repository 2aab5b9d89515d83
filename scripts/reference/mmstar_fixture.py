#!/usr/bin/env python3
"""Writes two small parquet files laid out as MMStar's published `mmstar.parquet` is
(Lin-Chen/MMStar: `index`, `question` with the options written into it, `image`, `answer` (a
letter), `category`, `l2_category`, `meta_info`), for vlmflow's reader tests:

  tests/fixtures/mmstar/mmstar_sample.parquet   the image as Hugging Face's Image feature writes
                                                it (a struct of `bytes` and `path`), snappy, as
                                                pyarrow writes by default; two row groups
  tests/fixtures/mmstar/binary_zstd.parquet     the image as plain binary, zstd-compressed

The images are 32-px shapes drawn here; row 5 of the sample holds bytes that are no image (a
reader must skip it and count it). Answers are chosen so that both letters and all categories
occur.

    /tmp/venv/bin/python scripts/reference/mmstar_fixture.py     # pyarrow, pillow
"""

import io
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mmstar"

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
CATEGORIES = [
    ("coarse perception", "image scene and topic"),
    ("coarse perception", "image style & quality"),
    ("fine-grained perception", "recognition"),
    ("fine-grained perception", "localization"),
]


def png(colour):
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([8, 8, 23, 23], fill=COLOURS[colour])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def rows():
    names = list(COLOURS)
    out = []
    for i in range(8):
        colour = names[i % 4]
        options = names[i % 2:] + names[: i % 2]
        listed = ", ".join(f"{'ABCD'[k]}: {name}" for k, name in enumerate(options))
        category, l2 = CATEGORIES[i % 4]
        out.append({
            "index": i,
            "question": f"What colour is the square?\nOptions: {listed}",
            "image": b"not an image" if i == 5 else png(colour),
            "answer": "ABCD"[options.index(colour)],
            "category": category,
            "l2_category": l2,
            "meta_info": {"source": "vlmflow", "split": "val", "image_path": [f"{i}.png"]},
        })
    return out


def table(rows, image_as_struct):
    image_type = (
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if image_as_struct else pa.binary()
    )
    images = [{"bytes": r["image"], "path": None} if image_as_struct else r["image"] for r in rows]
    return pa.table({
        "index": pa.array([r["index"] for r in rows], pa.int64()),
        "question": [r["question"] for r in rows],
        "image": pa.array(images, image_type),
        "answer": [r["answer"] for r in rows],
        "category": [r["category"] for r in rows],
        "l2_category": [r["l2_category"] for r in rows],
        "meta_info": [r["meta_info"] for r in rows],
    })


def main():
    ROOT.mkdir(parents=True, exist_ok=True)
    all_rows = rows()
    pq.write_table(table(all_rows, True), ROOT / "mmstar_sample.parquet", row_group_size=4)
    good = [r for r in all_rows if r["index"] != 5]
    pq.write_table(table(good, False), ROOT / "binary_zstd.parquet", compression="zstd")


if __name__ == "__main__":
    main()
