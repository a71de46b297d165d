import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package; their folder goes on
    ``sys.path`` so that one may import another)."""
    import importlib.util
    import sys

    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_data() -> Path | None:
    env = os.environ.get("NAPARI_GDT_DATA")
    # ../shared/data beside the checkout (also found from a git worktree further down)
    for cand in ([Path(env)] if env else []) + [p / "shared" / "data" for p in ROOT.parents]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session", autouse=True)
def _private_user_folders(tmp_path_factory):
    """Each test process (each pytest-xdist worker) gets its own config folder (saved gene sets),
    so tests never read or write the user's ~/.config and workers never share a file."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_GDT_CONFIG", str(tmp_path_factory.mktemp("config")))
    yield
    mp.undo()


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
