"""Tile caches: disk store across processes, two-level cache, errors."""

import numpy as np
import pytest

from napari_gdt.errors import GDTError
from napari_gdt.rendering.cache import DiskTileCache, TwoLevelCache, open_cache
from napari_gdt.rendering.tiles import MemoryTileCache, Region, TileRenderer


def test_disk_cache_roundtrip_and_damage(tmp_path):
    c = DiskTileCache(tmp_path / "tiles")
    a = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    assert c.get("ab12") is None
    c.put("ab12", a)
    assert "ab12" in c and len(c) == 1
    np.testing.assert_array_equal(DiskTileCache(tmp_path / "tiles").get("ab12"), a)  # a fresh instance sees it
    (tmp_path / "tiles" / "ab" / "ab12.npy").write_bytes(b"\x93NUMPY garbage")  # damaged file -> miss, removed
    assert c.get("ab12") is None and "ab12" not in c


def test_disk_cache_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GDTError, match=r"not a napari-gdt tile cache"):
        DiskTileCache(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(GDTError, match=r"file: tile cache path exists and is not a folder"):
        DiskTileCache(f)


def test_two_level_promotes_disk_hits(tmp_path):
    c = open_cache(tmp_path / "c", max_bytes=10_000)
    assert isinstance(c, TwoLevelCache) and c.folder == tmp_path / "c"
    a = np.ones((10, 10, 3), np.float32)
    c.put("k1", a)
    c2 = open_cache(tmp_path / "c")
    assert c2.get("k1") is not None and c2.stats["disk_hits"] == 1
    assert c2.get("k1") is not None and c2.stats["memory_hits"] == 1
    assert c2.get("nope") is None and c2.stats["misses"] == 1
    assert open_cache(None).disk is None


def test_renderer_with_disk_cache_computes_once(tmp_path, small_bundle, small_canvas):
    region = Region(0, 256, 0, 384)
    r1 = TileRenderer(small_bundle, small_canvas, seed=3, tile_px=128, device="cpu", cache=open_cache(tmp_path / "c"))
    a = r1.render_region(region)
    assert r1.stats == {"computed": 6, "cached": 0}
    r2 = TileRenderer(small_bundle, small_canvas, seed=3, tile_px=128, device="cpu", cache=open_cache(tmp_path / "c"))
    b = r2.render_region(region)
    assert r2.stats == {"computed": 0, "cached": 6}
    assert a.tobytes() == b.tobytes()
    r3 = TileRenderer(small_bundle, small_canvas, seed=4, tile_px=128, device="cpu", cache=open_cache(tmp_path / "c"))
    r3.render_region(Region(0, 128, 0, 128))
    assert r3.stats["computed"] == 1  # another seed is another key


def test_memory_cache_is_bounded():
    c = MemoryTileCache(max_bytes=3 * 400)
    for i in range(5):
        c.put(str(i), np.zeros(100, np.float32))
    assert len(c) == 3 and c.get("0") is None and c.get("4") is not None
