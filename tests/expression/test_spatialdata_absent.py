"""Without the optional 'spatialdata' package: a SpatialData store is recognised and refused in one line."""

import importlib.util
import json

import pytest

from napari_gdt.cli import main
from napari_gdt.expression.readers import detect_format

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("spatialdata") is not None,
    reason="spatialdata is installed (tests/expression/test_spatialdata.py covers it)",
)


def test_store_without_spatialdata_is_one_line(tmp_path, capsys):
    store = tmp_path / "sample.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"spatialdata_attrs": {"version": "0.2"}}})
    )
    assert detect_format(store) == "spatialdata"
    assert main(["convert", str(store), "--out", str(tmp_path / "c.ome.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(store) in err[0] and "pip install 'napari-gdt[spatialdata]'" in err[0]
    from napari_gdt._reader import get_reader

    assert get_reader(str(store)) is None  # napari leaves it to napari-spatialdata (or says no reader)
