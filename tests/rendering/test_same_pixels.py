"""One renderer, same pixels: the napari layer, ``napari-gdt render``, the figure and the OME-Zarr export agree.

The same region (not tile-aligned) is rendered four ways from the same bundle file and
canvas; every path quantises with :func:`napari_gdt.pixels.quantise` and downsamples with
:func:`napari_gdt.pixels.downsample2x`, so the 8-bit pixels must be identical, and the
coarser levels of the layer pyramid and of the export too.
"""

import numpy as np
import pytest
import zarr

Y0, Y1, X0, X1 = 32, 288, 64, 448  # output px; even origin and size, not aligned to the 128-px tiles
REGION = f"{Y0}:{Y1},{X0}:{X1}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    d = tmp_path_factory.mktemp("same")
    b = untrained_bundle(out_channels=3, seed=0, stage_channels=(8, 8, 8, 8), emb_ch=8)
    m = d / "model.safetensors"
    save_bundle(m, b.model, b.genes, um_per_px=0.5, output={"kind": "he", "channels": ["R", "G", "B"]}, tile_px=128, name="tiny")
    c = synthetic_canvas((24, 32), seed=3).to_ome_zarr(d / "canvas.ome.zarr")
    return d, m, c


def test_layer_cli_figure_and_omezarr_give_identical_pixels(files):
    import napari
    from skimage.io import imread

    from napari_gdt.cli import main
    from napari_gdt.cli._common import load_model, open_canvas
    from napari_gdt.export.figure import figure_panels
    from napari_gdt.export.omezarr_render import render_to_omezarr
    from napari_gdt.pixels import downsample2x, quantise
    from napari_gdt.rendering.tiles import Region, TileRenderer
    from napari_gdt.session import Session

    d, m, c = files
    region = Region(Y0, Y1, X0, X1)

    # 1. the napari layer: a Session's lazy pyramid as a multiscale Image layer (no viewer needed)
    s = Session(load_model(m, "cpu"), open_canvas(c), seed=0, device="cpu", num_threads=1)
    pyr = s.generate()
    pyr.compute_region(region)
    layer = napari.layers.Image(pyr.levels, multiscale=True, rgb=True)
    from_layer = np.asarray(layer.data[0][Y0:Y1, X0:X1])
    layer1 = np.asarray(layer.data[1][Y0 // 2 : Y1 // 2, X0 // 2 : X1 // 2])
    s.close()

    # 2. the CLI: napari-gdt render --out region.png (8-bit)
    png = d / "region.png"
    assert (
        main(["render", "--model", str(m), "--expression", str(c), "--region", REGION, "--out", str(png), "--device", "cpu"]) == 0
    )
    from_cli = imread(png)

    # 3. the figure: the generated panel, 8-bit by the same rule as the figure draws it
    renderer = TileRenderer(load_model(m, "cpu"), open_canvas(c), seed=0, device="cpu")
    (panel,) = figure_panels(renderer, region, panels=["generated"])
    from_figure = quantise(panel.image)

    # 4. the OME-Zarr export (uint8, 2 levels)
    out = d / "region.ome.zarr"
    render_to_omezarr(m, c, out, region=REGION, chunk_px=128, levels=2, device="cpu", progress=False)
    from_zarr = np.moveaxis(np.asarray(zarr.open_array(str(out / "0"), mode="r")), 0, -1)
    zarr1 = np.moveaxis(np.asarray(zarr.open_array(str(out / "1"), mode="r")), 0, -1)

    assert from_layer.shape == (Y1 - Y0, X1 - X0, 3) and from_layer.dtype == np.uint8
    assert from_layer.std() > 0  # a real image, not a flat placeholder
    for name, img in (("CLI render", from_cli), ("figure", from_figure), ("OME-Zarr", from_zarr)):
        assert img.dtype == np.uint8 and img.shape == from_layer.shape, name
        assert np.array_equal(img, from_layer), (
            f"{name} differs from the napari layer by up to {np.abs(img.astype(int) - from_layer).max()}"
        )
    # coarser level: the same 2x2 rule in the layer pyramid and in the export
    assert np.array_equal(zarr1, layer1)
    assert np.array_equal(zarr1, downsample2x(from_layer, axes=(0, 1)))
