"""Living beside napari-spatialdata: which reader napari offers for whose files.

npe2 matches *files* by filename pattern, but offers *every* reader that accepts
directories for *any* folder (patterns are not consulted), so for folders --
our canvases, SpatialData stores -- napari asks the user to choose (and can
remember the choice) as soon as two such plugins are installed; napari-ome-zarr
(one of our dev extras) already is one. What we control: our patterns claim no
``*.zarr`` (napari-spatialdata's), each plugin reads the other's folders only
when asked by name, and a remembered choice per folder pattern settles it.
"""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari_spatialdata", reason="napari-spatialdata is not installed (pip install napari-spatialdata)")
sd = pytest.importorskip("spatialdata")

from napari.errors import MultipleReaderError
from npe2 import PluginManager

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def plugins():
    pm = PluginManager.instance()
    pm.discover()
    names = {m.name for m in pm.iter_manifests()}
    if not {"napari-gdt", "napari-spatialdata"} <= names:
        pytest.skip(f"both plugins must be installed (found: {', '.join(sorted(names))})")
    return pm


def _readers(pm, path):
    return {r.plugin_name for r in pm.iter_compatible_readers([str(path)])}


@pytest.fixture
def files(tmp_path, small_bundle):
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, PointsModel
    from spatialdata.transformations import Scale

    from napari_gdt.synthetic import synthetic_canvas

    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame(
        {"x": rng.uniform(0, 90, n), "y": rng.uniform(0, 70, n), "gene": pd.Categorical(rng.choice(small_bundle.genes[:5], n))}
    )
    pts = PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene")
    img = Image2DModel.parse(
        rng.integers(0, 255, (3, 140, 180), dtype=np.uint8),
        dims=("c", "y", "x"),
        transformations={"global": Scale([0.5, 0.5], axes=("y", "x"))},
    )
    store = tmp_path / "sample.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SpatialData(images={"he": img}, points={"transcripts": pts}).write(store)
    table = tmp_path / "transcripts.parquet"
    pd.DataFrame({"x_location": df["x"], "y_location": df["y"], "feature_name": df["gene"].astype(str), "qv": 30.0}).to_parquet(
        table
    )  # Xenium
    canvas = synthetic_canvas((20, 20), seed=0).to_ome_zarr(tmp_path / "canvas.ome.zarr")
    return {"store": store, "table": table, "canvas": canvas, "df": df}


def test_files_have_one_reader_and_folders_are_offered_to_all(plugins, files, tmp_path):
    assert _readers(plugins, files["table"]) == {"napari-gdt"}
    (tmp_path / "x.csv").write_text("x,y,gene\n1,2,A\n")
    assert "napari-gdt" in _readers(plugins, tmp_path / "x.csv") and "napari-spatialdata" not in _readers(
        plugins, tmp_path / "x.csv"
    )
    # a .zarr *file* (e.g. a zip store) is napari-spatialdata's alone: we claim no "*.zarr"
    (tmp_path / "zipped.zarr").write_bytes(b"")
    assert "napari-gdt" not in _readers(plugins, tmp_path / "zipped.zarr")
    # folders: every directory reader is offered, whatever the patterns (npe2)
    for p in (files["store"], files["canvas"]):
        assert {"napari-gdt", "napari-spatialdata"} <= _readers(plugins, p)


def test_each_plugin_reads_the_store_when_chosen(plugins, files, make_napari_viewer, small_bundle):
    from napari.settings import get_settings

    from napari_gdt._reader import get_reader

    # our reader accepts the store and the canvas (returns a reader), and declines folders it cannot read
    assert get_reader(str(files["store"])) is not None and get_reader(str(files["canvas"])) is not None
    viewer = make_napari_viewer()
    gui_open = viewer._open_or_raise_error  # what File > Open and drag-and-drop call (viewer.open tries readers in turn)
    with pytest.raises(MultipleReaderError):
        gui_open([str(files["store"])])  # no choice remembered yet: napari asks
    settings = get_settings().plugins
    old = dict(settings.extension2reader)
    try:
        # what napari's "remember this choice" stores: a folder pattern per plugin. napari scores "*.ome.zarr/"
        # and "*.zarr/" as equally specific and takes the first listed, so canvases' pattern goes first
        settings.extension2reader = {"*.ome.zarr/": "napari-gdt", "*.zarr/": "napari-spatialdata", **old}
        layers = gui_open([str(files["canvas"])])  # -> napari-gdt
        assert layers and all("gene" in lyr.metadata for lyr in layers)
        gui_open([str(files["store"])])  # -> napari-spatialdata, no MultipleReaderError
        assert any("SpatialData" in name for name in viewer.window.dock_widgets)
        # opening a file is unambiguous, with or without a remembered choice
        n = len(viewer.layers)
        gui_open([str(files["table"])])
        assert len(viewer.layers) == n + 3  # napari-gdt: the top three genes
        # and napari-gdt opens the store when asked by name
        layers = viewer.open(str(files["store"]), plugin="napari-gdt")
        assert sum(float(np.asarray(lyr.data).sum()) for lyr in layers) > 0
    finally:
        settings.extension2reader = old


def test_store_we_wrote_lists_our_images_in_napari_spatialdata(plugins, files, small_bundle, tmp_path):
    """napari-spatialdata's element list (the function its SpatialData widget fills itself from) shows our images."""
    from napari.utils.events import EventedList
    from napari_spatialdata.utils._utils import get_duplicate_element_names, get_elements_meta_mapping

    from napari_gdt.export.spatialdata import render_into_spatialdata
    from napari_gdt.expression.spatialdata import read_spatialdata

    store = tmp_path / "ours.zarr"
    shutil.copytree(files["store"], store)
    canvas = read_spatialdata(store, bin_um=8.0, genes=small_bundle.genes, zero_fill=True)
    render_into_spatialdata(store, small_bundle, canvas, device="cpu", tile_px=64)
    sdatas = EventedList(data=[sd.read_zarr(store)])
    dup, _ = get_duplicate_element_names(sdatas)
    listed, _ = get_elements_meta_mapping(sdatas, "global", dup)
    assert {"he", "transcripts", "gdt_generated"} <= set(listed)
    assert listed["gdt_generated"]["element_type"] == "images"
