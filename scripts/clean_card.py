"""Clean the model card of one or more bundles in place (tensors are copied byte for byte).

    python scripts/clean_card.py src/napari_gdt/models/weights/*.safetensors
    python scripts/clean_card.py my-model.safetensors --out my-model-shared.safetensors

Absolute paths (data files, canvases, checkpoints, paths inside recorded commands) become public
sample-data names (``her2st/C2/he.jpg``) or bare file names; floats in provenance and validation are
rounded to 4 significant digits. ``--canvas-bin-px N`` records the image px per bin of spot-data
training canvases when the card lacks it (``convert --model`` uses it). The script checks that every tensor's bytes
and the bundle digest (the tile-cache key) are unchanged, and prints one line per file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def _tensor_bytes(path: Path) -> dict:
    from napari_gdt.models.card import read_header

    header, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for k, v in header.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            f.seek(start + a)
            out[k] = (v["dtype"], tuple(v["shape"]), hashlib.sha256(f.read(b - a)).hexdigest())
    return out


def main(argv=None) -> int:
    from napari_gdt.models.card import clean_card, file_digest, read_card, rewrite_card

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="write here instead of in place (one input only)")
    ap.add_argument(
        "--canvas-bin-px",
        type=float,
        default=None,
        help="record this many image px per bin for training canvases whose entry lacks it "
        "(spot-data models; her2st-he was trained on 32 he.jpg px per bin)",
    )
    args = ap.parse_args(argv)
    if args.out and len(args.bundles) != 1:
        ap.error("--out takes exactly one input bundle")
    for src in args.bundles:
        dst = args.out or src
        before = _tensor_bytes(src)
        digest = file_digest(src)
        card = read_card(src)
        new = clean_card(card, canvas_bin_px=args.canvas_bin_px)
        rewrite_card(src, new, dst)
        if _tensor_bytes(dst) != before or file_digest(dst) != digest:
            print(f"{dst}: tensors changed while rewriting the card", file=sys.stderr)
            return 1
        print(f"{dst}: card cleaned ({len(before)} tensors unchanged, digest {digest[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
