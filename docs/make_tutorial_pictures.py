"""Regenerate the small pictures of the her2st and MERFISH tutorials (docs/images/tutorial-*.png).

    NAPARI_GDT_DATA=/path/to/data python docs/make_tutorial_pictures.py [--work /tmp/tut]

Runs steps 2-4 of docs/tutorials/her2st-what-if.md (convert, recipe, render before and after) in
``--work`` and writes ``tutorial-her2st-render.png``: generated.png and edited.png side by side,
256 px each; ``tutorial-her2st-transfer.png``: generated.png, the step-9 transfer (tumour
profile into the stroma rectangle) and their difference (x4), 256 px each; and steps 1-2 of
merfish-dapi.md, writing ``tutorial-merfish-render.png`` (the generated DAPI crop at 256 px). Only
generated pixels: no real image is copied into the docs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

RECIPE = {
    "version": 1,
    "regions": {"stroma": {"rect": [1700, 640, 2000, 1100]}},
    "edits": [{"op": "scale", "region": "stroma", "genes": ["ERBB2", "GRB7", "KRT19", "EPCAM"], "factor": 3.0}],
}
TRANSFER = {
    "version": 1,
    "regions": {"tumour": {"rect": [1904, 224, 2224, 544]}, "stroma": {"rect": [1700, 640, 2000, 1100]}},
    "edits": [{"op": "transfer", "from": "tumour", "to": "stroma", "genes": "all", "strength": 1.0}],
}


def main(argv=None) -> int:
    from skimage.io import imread, imsave
    from skimage.transform import resize

    from napari_gdt.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/napari-gdt-tutorial")
    ap.add_argument("--out", default=str(Path(__file__).parent / "images"))
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    d = Path(os.environ["NAPARI_GDT_DATA"]) / "her2st" / "C5"
    canvas, recipe = work / "C5.ome.zarr", work / "stroma-tumour.json"
    if not canvas.exists():
        assert (
            cli(
                [
                    "convert",
                    str(d / "counts.tsv.gz"),
                    str(d / "spots.tsv"),
                    "--format",
                    "st",
                    "--model",
                    "her2st-he",
                    "--image",
                    str(d / "he.jpg"),
                    "--out",
                    str(canvas),
                ]
            )
            == 0
        )
    recipe.write_text(json.dumps(RECIPE))
    transfer = work / "tumour-to-stroma.json"
    transfer.write_text(json.dumps(TRANSFER))
    region = "1600:2112,640:1152"
    renders = (("generated", []), ("edited", ["--edits", str(recipe)]), ("transferred", ["--edits", str(transfer)]))
    for name, extra in renders:
        assert (
            cli(
                [
                    "render",
                    "--model",
                    "her2st-he",
                    "--expression",
                    str(canvas),
                    *extra,
                    "--region",
                    region,
                    "--cache",
                    str(work / "tiles"),
                    "--out",
                    str(work / f"{name}.png"),
                ]
            )
            == 0
        )

    def thumb(p):
        return (resize(imread(p)[..., :3], (256, 256), anti_aliasing=True) * 255).astype(np.uint8)

    gap = np.full((256, 8, 3), 255, np.uint8)
    out = Path(a.out) / "tutorial-her2st-render.png"
    imsave(out, np.concatenate([thumb(work / "generated.png"), gap, thumb(work / "edited.png")], axis=1), check_contrast=False)
    print(f"wrote {out}")
    g, t = thumb(work / "generated.png"), thumb(work / "transferred.png")
    diff = np.clip(np.abs(g.astype(int) - t.astype(int)).mean(axis=-1) * 4, 0, 255).astype(np.uint8)
    out = Path(a.out) / "tutorial-her2st-transfer.png"
    imsave(out, np.concatenate([g, gap, t, gap, np.repeat(diff[..., None], 3, axis=-1)], axis=1), check_contrast=False)
    print(f"wrote {out}")

    m = Path(os.environ["NAPARI_GDT_DATA"]) / "merfish_mouse_brain"
    brain = work / "brain.ome.zarr"
    if not brain.exists():
        assert (
            cli(
                [
                    "convert",
                    str(m / "transcripts_z0.csv.gz"),
                    "--format",
                    "merfish",
                    "--model",
                    "merfish-dapi",
                    "--image",
                    str(m / "dapi_z0.jpg"),
                    "--image-extent-um",
                    "6400.029,6900.037,4699.967,5150.007",
                    "--out",
                    str(brain),
                ]
            )
            == 0
        )
    assert (
        cli(
            [
                "render",
                "--model",
                "merfish-dapi",
                "--expression",
                str(brain),
                "--region",
                "0:512,0:512",
                "--cache",
                str(work / "tiles"),
                "--out",
                str(work / "dapi-generated.png"),
            ]
        )
        == 0
    )
    g = imread(work / "dapi-generated.png")
    out = Path(a.out) / "tutorial-merfish-render.png"
    imsave(out, (resize(g, (256, 256), anti_aliasing=True, preserve_range=True)).astype(np.uint8), check_contrast=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
