import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    env = os.environ.get("NAPARI_GDT_DATA")
    # ../shared/data beside the checkout (also found from a git worktree further down)
    for cand in ([Path(env)] if env else []) + [p / "shared" / "data" for p in ROOT.parents]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir():
    d = shared_data()
    if d is None:
        pytest.skip("real data folder not found (set NAPARI_GDT_DATA)")
    return d


@pytest.fixture(scope="session")
def small_bundle():
    from napari_gdt.synthetic import untrained_bundle

    return untrained_bundle(out_channels=3, seed=0, stage_channels=(32, 24, 16, 16), emb_ch=32)


@pytest.fixture(scope="session")
def small_canvas():
    from napari_gdt.synthetic import synthetic_canvas

    return synthetic_canvas((80, 80), seed=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
