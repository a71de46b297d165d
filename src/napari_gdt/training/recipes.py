"""Data preparation for the two bundled demo models (documented in docs/training.md).

Run as ``python -m napari_gdt.training.recipes her2st|merfish --out DIR``. It
reads the sample data (``napari_gdt.data``: a local ``NAPARI_GDT_DATA`` folder
or the cached public download) and writes the expression canvases the
``napari-gdt train`` commands use. Nothing here is committed: the canvases are
derived from the data.

her2st
    Gene panel: the ``n_genes`` (default 256) most variable genes among those
    measured in all four sections C2-C5 and expressed at >= 1 UMI per spot on
    average in C2-C4: ranked by the variance of log1p counts-per-10k over the
    pooled C2-C4 spots, followed by ``HER2ST_MARKERS`` (HER2 amplicon, keratins,
    stroma and immune markers) not already among them. Canvases: ``mode="spread"`` (Gaussian kernel, sigma =
    half the spot pitch) on 32 he.jpg px bins (about 23.5 µm), so with
    ``px_per_bin`` 16 the model paints at 2 he.jpg px per output px
    (about 1.47 µm/px).
merfish
    All 450 real genes (``Blank-*`` controls dropped), binned on 64 DAPI px
    (about 6.95 µm); with ``px_per_bin`` 16 the model paints at 4 DAPI px per
    output px (about 0.43 µm/px).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..expression.samples import MERFISH_EXTENT_UM, merfish_canvas  # re-exported (analysis uses them too)

__all__ = ["HER2ST_MARKERS", "MERFISH_EXTENT_UM", "her2st_panel", "merfish_canvas", "prepare_her2st", "prepare_merfish"]

HER2ST_TRAIN = ("C2", "C3", "C4")
HER2ST_VAL = ("C5",)


# Markers a HER2+ breast-cancer what-if needs (HER2 amplicon, luminal keratins, proliferation,
# stroma, immune, vessels). Highly expressed everywhere, several are not "variable" by the rank
# above, so they are added to the panel by name (when measured in every section).
HER2ST_MARKERS = (
    "ERBB2",
    "GRB7",
    "STARD3",
    "PGAP3",
    "KRT19",
    "KRT18",
    "KRT7",
    "MUC1",
    "MKI67",
    "TOP2A",
    "COL1A1",
    "COL1A2",
    "COL3A1",
    "VIM",
    "ACTA2",
    "MGP",
    "PTPRC",
    "PECAM1",
    "IGKC",
)


def her2st_panel(paths: dict, n_genes: int = 256, train=HER2ST_TRAIN, min_mean: float = 1.0, include=()) -> list[str]:
    """Highly variable genes shared by all sections (see module docstring), then the ``include`` genes not among them.

    An ``include`` gene missing from a section raises :class:`~napari_gdt.errors.GDTError` naming it.
    """
    import pandas as pd

    tables = {s: pd.read_csv(p["counts"], sep="\t", index_col=0) for s, p in paths.items()}
    shared = set.intersection(*(set(t.columns) for t in tables.values()))
    pooled = pd.concat([tables[s][sorted(shared)] for s in train], axis=0)
    keep = pooled.columns[pooled.mean(axis=0) >= min_mean]
    pooled = pooled[keep]
    cp10k = pooled.div(pooled.sum(axis=1), axis=0) * 1e4
    var = np.log1p(cp10k).var(axis=0)
    genes = list(var.sort_values(ascending=False).index[:n_genes])
    missing = [g for g in include if g not in shared]
    if missing:
        from ..errors import GDTError

        raise GDTError(f"gene(s) to include not measured in every section ({', '.join(paths)}): {', '.join(missing)}")
    return genes + [g for g in include if g not in set(genes)]


def prepare_her2st(
    out_dir,
    n_genes: int = 256,
    bin_px: int = 32,
    mode: str = "spread",
    sections=HER2ST_TRAIN + HER2ST_VAL,
    include=HER2ST_MARKERS,
) -> dict:
    """Write the her2st gene panel and one canvas per section into ``out_dir`` (see the module docstring); returns their paths."""
    from ..data import fetch_her2st
    from ..expression.spots import read_st

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {s: fetch_her2st(s) for s in sections}
    genes = her2st_panel(paths, n_genes, include=include)
    (out / "her2st_genes.txt").write_text("\n".join(genes) + "\n")
    res = {"genes": str(out / "her2st_genes.txt")}
    for s in sections:
        p = paths[s]
        c = read_st(p["counts"], p["spots"], bin_px, image=p["image"], mode=mode, genes=genes)
        dst = out / f"her2st_{s}.ome.zarr"
        c.to_ome_zarr(dst)
        res[s] = {"canvas": str(dst), "image": str(p["image"])}
        print(f"{s}: {c.shape} bins of {c.bin_um:.2f} µm, total {c.total():.0f} -> {dst}")
    (out / "her2st.json").write_text(json.dumps(res, indent=1))
    return res


def prepare_merfish(out_dir, bin_px: int = 64) -> dict:
    """Write the MERFISH z0 canvas (``bin_px`` DAPI px per bin) into ``out_dir``; returns its path and the DAPI image path."""
    from ..data import fetch_merfish
    from ..pixels import read_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = fetch_merfish()
    img = read_image(p["dapi"])
    c = merfish_canvas(p["transcripts"], img.shape[:2], bin_px=bin_px)
    dst = out / "merfish_z0.ome.zarr"
    c.to_ome_zarr(dst)
    print(f"merfish: {c.shape} bins of {c.bin_um:.2f} µm, total {c.total():.0f} -> {dst}")
    res = {"canvas": str(dst), "image": str(p["dapi"])}
    (out / "merfish.json").write_text(json.dumps(res, indent=1))
    return res


def demo_canvas(dataset: str = "her2st", section: str = "C5", genes=None):
    """The canvas a bundled demo model expects, built in memory from the sample data.

    Returns ``(canvas, image_path, model_name)``. ``her2st``: section ``section`` read with the
    settings the ``her2st-he`` model was trained with (``mode="spread"``, 32 he.jpg px per bin, the
    model's gene panel). ``merfish``: the z0 transcripts binned on 64 DAPI px with the
    ``merfish-dapi`` panel. ``genes`` defaults to the bundled model's panel.
    """
    from ..data import fetch_her2st, fetch_merfish
    from ..models.bundle import read_card

    if dataset == "her2st":
        from ..expression.spots import read_st

        genes = genes or read_card("her2st-he")["genes"]
        p = fetch_her2st(section)
        return read_st(p["counts"], p["spots"], 32, image=p["image"], mode="spread", genes=genes), p["image"], "her2st-he"
    if dataset == "merfish":
        from ..pixels import read_image

        genes = genes or read_card("merfish-dapi")["genes"]
        p = fetch_merfish()
        H, W = read_image(p["dapi"]).shape[:2]
        return merfish_canvas(p["transcripts"], (H, W), bin_px=64, genes=genes), p["dapi"], "merfish-dapi"
    from ..errors import GDTError

    raise GDTError(f"unknown demo dataset {dataset!r} (choose her2st or merfish)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m napari_gdt.training.recipes")
    ap.add_argument("dataset", choices=["her2st", "merfish"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-genes", type=int, default=256, help="her2st: number of highly variable genes (default 256)")
    ap.add_argument("--no-markers", action="store_true", help="her2st: do not add HER2ST_MARKERS to the variable genes")
    a = ap.parse_args(argv)
    if a.dataset == "her2st":
        prepare_her2st(a.out, n_genes=a.n_genes, include=() if a.no_markers else HER2ST_MARKERS)
    else:
        prepare_merfish(a.out)


if __name__ == "__main__":
    main()
