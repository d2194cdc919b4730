"""The README's first command: every operation on the bundled samples, a table and a contact sheet.

Runs in-process on the shipped model with no servers, so that a fresh clone shows what maskq does
in one command. ``python -m maskq.demo --out out/demo``
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from maskq import defaults
from maskq.errors import MaskqError
from maskq.ops import OPERATIONS
from maskq.pipeline import Pipeline
from maskq.settings import load_settings

SAMPLES = defaults.REPO_ROOT / "samples"
LOGO = "logo.png"
# (input, operation, params): each operation at least once, the webshop's canvas among them
DEMO_JOBS: list[tuple[str, str, dict]] = [
    ("chelsea.jpg", "mask", {}),
    ("chelsea.jpg", "remove", {"crop": True}),
    ("chelsea.jpg", "swap", {"canvas_width": 1000, "canvas_height": 1000, "scale": 0.8, "logo": LOGO}),
    ("chelsea.jpg", "blur", {"strength": 60}),
    ("chelsea.jpg", "crop", {"margin": 0.1}),
    ("astronaut.jpg", "remove", {}),
    ("coffee.jpg", "swap", {"background_color": "#2a6f97"}),
]
THUMB = 220


def contact_sheet(rows: list[tuple[bytes, bytes, str]], path: Path) -> None:
    """Input and output side by side, one row per job, transparency on a checkerboard."""
    sheet = Image.new("RGB", (2 * THUMB + 30, len(rows) * (THUMB + 24) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (src, out, label) in enumerate(rows):
        y = 10 + i * (THUMB + 24)
        draw.text((10, y), label, fill="black")
        for j, data in enumerate((src, out)):
            img = Image.open(io.BytesIO(data)).convert("RGBA")
            img.thumbnail((THUMB, THUMB))
            tile = Image.new("RGBA", img.size, "white")
            checker = ImageDraw.Draw(tile)
            for cy in range(0, img.height, 12):
                for cx in range((cy // 12 % 2) * 12, img.width, 24):
                    checker.rectangle((cx, cy, cx + 11, cy + 11), fill=(215, 215, 215, 255))
            tile.alpha_composite(img)
            sheet.paste(tile.convert("RGB"), (10 + j * (THUMB + 10), y + 14))
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pipeline = Pipeline.load(load_settings())
    except MaskqError as err:
        print(f"maskq demo: {err.code}: {err.message}", file=sys.stderr)
        return 3
    print(f"model loaded in {time.perf_counter() - t0:.2f} s ({pipeline.segmenter.model_path.name})")
    logo = (SAMPLES / LOGO).read_bytes()
    rows, failures = [], 0
    print(f"{'job':<4} {'operation':<9} {'input':<14} {'state':<9} {'seconds':>7}  output")
    for i, (name, op, params) in enumerate(DEMO_JOBS, 1):
        assert op in OPERATIONS
        src = (SAMPLES / name).read_bytes()
        t = time.perf_counter()
        try:
            result = pipeline.process(src, op, params, {LOGO: logo})
            state = "succeeded"
        except MaskqError as err:
            failures += 1
            print(f"{i:<4} {op:<9} {name:<14} {'failed':<9} {time.perf_counter() - t:7.3f}  {err.code}: {err.message}")
            continue
        target = args.out / f"{i:02d}-{Path(name).stem}-{op}.{result.extension}"
        target.write_bytes(result.data)
        rows.append((src, result.data, f"{i}. {op} {params or ''}"))
        print(f"{i:<4} {op:<9} {name:<14} {state:<9} {time.perf_counter() - t:7.3f}  {target}")
    sheet = args.out / "contact-sheet.png"
    contact_sheet(rows, sheet)
    print(f"contact sheet: {sheet}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
