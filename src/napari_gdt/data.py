"""Sample data: the public her2st and MERFISH files, fetched with pooch (sha256-checked, cached).

A local folder with the layout of the project's shared data folder overrides
the download when the environment variable ``NAPARI_GDT_DATA`` names it::

    $NAPARI_GDT_DATA/her2st/C2/{counts.tsv.gz, spots.tsv, he.jpg}
    $NAPARI_GDT_DATA/merfish_mouse_brain/{transcripts_z0.csv.gz, dapi_z0.jpg, ...}
    $NAPARI_GDT_DATA/visium_mouse_brain_crop/{test_data.h5ad, test_img.jpg}

Otherwise files are downloaded from their public GitHub sources
(``raw.githubusercontent.com/<repo>/<commit>/<path>``, pinned commits) into
the pooch cache (``NAPARI_GDT_CACHE`` or the OS cache folder). The MERFISH
``transcripts_z0.csv.gz`` is derived: the source ``vizgen_transcripts.gz``
(both z-planes) is fetched and its ``global_z == 0`` rows are written once to
the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GDTError


def file_sha256(path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = [
    "ENV_VAR",
    "HER2ST_SECTIONS",
    "OFFLINE_ENV_VAR",
    "REGISTRY",
    "OfflineError",
    "data_root",
    "fetch",
    "fetch_her2st",
    "fetch_merfish",
    "fetch_visium_crop",
]

ENV_VAR = "NAPARI_GDT_DATA"
CACHE_ENV_VAR = "NAPARI_GDT_CACHE"
OFFLINE_ENV_VAR = "NAPARI_GDT_OFFLINE"  # "1": never try to download
HER2ST_SECTIONS = ("C2", "C3", "C4", "C5")

_HER2ST = "almaan/her2st@85df7411b987a7dec3feff9718b869a7a82091ec"
_GIOTTO = "drieslab/GiottoData@1dc55ee8195104a81549b9e3fad04bd459b226de"
_SQUIDPY = "scverse/squidpy@be17fcf6afddbf06011429a6cf43b70cb9fac9b4"
_VIZ = "inst/Mini_datasets/Vizgen/Raw"

# local relative path -> (repo@commit, source path, sha256 of the source)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "her2st/C2/counts.tsv.gz": (
        _HER2ST,
        "data/ST-cnts/C2.tsv.gz",
        "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
    ),
    "her2st/C2/spots.tsv": (
        _HER2ST,
        "data/ST-spotfiles/C2_selection.tsv",
        "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
    ),
    "her2st/C2/he.jpg": (
        _HER2ST,
        "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg",
        "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
    ),
    "her2st/C3/counts.tsv.gz": (
        _HER2ST,
        "data/ST-cnts/C3.tsv.gz",
        "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
    ),
    "her2st/C3/spots.tsv": (
        _HER2ST,
        "data/ST-spotfiles/C3_selection.tsv",
        "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
    ),
    "her2st/C3/he.jpg": (
        _HER2ST,
        "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg",
        "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
    ),
    "her2st/C4/counts.tsv.gz": (
        _HER2ST,
        "data/ST-cnts/C4.tsv.gz",
        "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
    ),
    "her2st/C4/spots.tsv": (
        _HER2ST,
        "data/ST-spotfiles/C4_selection.tsv",
        "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
    ),
    "her2st/C4/he.jpg": (
        _HER2ST,
        "data/ST-imgs/C/C4/5714_HE_BT_D2.jpg",
        "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
    ),
    "her2st/C5/counts.tsv.gz": (
        _HER2ST,
        "data/ST-cnts/C5.tsv.gz",
        "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
    ),
    "her2st/C5/spots.tsv": (
        _HER2ST,
        "data/ST-spotfiles/C5_selection.tsv",
        "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
    ),
    "her2st/C5/he.jpg": (
        _HER2ST,
        "data/ST-imgs/C/C5/5714_HE_BT_E1.jpg",
        "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
    ),
    "merfish_mouse_brain/vizgen_transcripts.gz": (
        _GIOTTO,
        f"{_VIZ}/vizgen_transcripts.gz",
        "b0440c5617efff80b4f3982fa12a3960d88c104838a20f544966f7d7b2cd04ba",
    ),
    "merfish_mouse_brain/dapi_z0.jpg": (
        _GIOTTO,
        f"{_VIZ}/images/mini_dataset_dapi_z0.jpg",
        "4e6019729ac67c4a218e02102493078195e7e42ca281e0c122c3824322c5e8b0",
    ),
    "merfish_mouse_brain/polyT_z0.jpg": (
        _GIOTTO,
        f"{_VIZ}/images/mini_dataset_polyT_z0.jpg",
        "17347ae38b9a03899a6aa2e4459ad2958bfd5f02333882c7186593976af2b53d",
    ),
    "merfish_mouse_brain/cell_boundaries_z0.csv.gz": (
        _GIOTTO,
        f"{_VIZ}/cell_boundaries/z0_polygons.gz",
        "8e9229a10d2f5ca0fe111a6791f865085fcae86a58fa12e77b1b3bd0853d75c5",
    ),
    "visium_mouse_brain_crop/test_data.h5ad": (
        _SQUIDPY,
        "tests/_data/test_data.h5ad",
        "f0227d2639b803401afd65c432ac047c6f04710221dbdf7f3d70a18eff1a3766",
    ),
    "visium_mouse_brain_crop/test_img.jpg": (
        _SQUIDPY,
        "tests/_data/test_img.jpg",
        "b87670003e05039f8c924d53fe98f3606991c78ffc629a3ee8f56bc5dd134269",
    ),
}


def url_for(rel: str) -> str:
    """Public raw URL of a registry entry."""
    repo_commit, src, _ = REGISTRY[rel]
    repo, commit = repo_commit.split("@")
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{src}"


def describe(path) -> dict:
    """Provenance of a local file: its sample-data name, public source URL and sha256 when it is
    one of the registered files (or the derived MERFISH z0 table), else just the path."""
    p = str(Path(path)).replace("\\", "/")
    for rel in REGISTRY:
        if p.endswith("/" + rel) or p == rel:
            return {"file": rel, "source": url_for(rel), "sha256": REGISTRY[rel][2]}
    if p.endswith("merfish_mouse_brain/transcripts_z0.csv.gz"):
        rel = "merfish_mouse_brain/vizgen_transcripts.gz"
        return {
            "file": "merfish_mouse_brain/transcripts_z0.csv.gz",
            "source": url_for(rel),
            "sha256": REGISTRY[rel][2],
            "derived": "rows with global_z == 0",
        }
    return {"file": p}


def data_root() -> Path | None:
    """The local override folder (``$NAPARI_GDT_DATA``), or None."""
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return None
    p = Path(env).expanduser()
    if not p.is_dir():
        raise GDTError(
            f"{ENV_VAR}={env}: no such folder (it should hold her2st/, merfish_mouse_brain/ ... as in the sample-data layout)"
        )
    return p


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-gdt"))


class OfflineError(GDTError):
    """A sample file is neither in the local folder nor in the cache, and cannot be downloaded."""


def _reachable(url: str, timeout: float = 4.0) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` s (no download)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get(OFFLINE_ENV_VAR, "").strip() not in ("", "0"):
        return False
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch(rel: str) -> Path:
    """Local path of sample file ``rel`` (override folder, else cached download)."""
    root = data_root()
    if root is not None:
        p = root / rel
        if not p.exists():
            raise GDTError(f"{p}: missing from the {ENV_VAR} folder {root} (expected the sample-data layout)")
        return p
    if rel not in REGISTRY:
        raise GDTError(f"unknown sample file {rel!r}")
    import pooch

    _, _, sha = REGISTRY[rel]
    dst = cache_dir() / Path(rel).parent
    if not (dst / Path(rel).name).exists() and not _reachable(url_for(rel)):
        # fail in seconds, not after the download's own retries and timeouts
        raise OfflineError(
            f"{rel}: not in the cache and no network to download it; set {ENV_VAR} to a folder with the sample data"
        )
    try:
        path = pooch.retrieve(url_for(rel), known_hash=f"sha256:{sha}", fname=Path(rel).name, path=dst, progressbar=False)
    except Exception as e:  # noqa: BLE001 - pooch raises network, HTTP and hash errors of many types; all become one GDTError
        raise GDTError(
            f"could not download sample file {rel} from {url_for(rel)} ({type(e).__name__}: {e}). "
            f"Offline? Set {ENV_VAR} to a local folder with the sample data (her2st/, merfish_mouse_brain/, ...)"
        ) from None
    return Path(path)


def fetch_her2st(section: str = "C5") -> dict[str, Path]:
    """Paths ``{"counts", "spots", "image"}`` of a her2st patient-C section (C2, C3, C4 or C5)."""
    if section not in HER2ST_SECTIONS:
        raise GDTError(f"her2st section {section!r} is not in the sample data (choose from {', '.join(HER2ST_SECTIONS)})")
    return {
        "counts": fetch(f"her2st/{section}/counts.tsv.gz"),
        "spots": fetch(f"her2st/{section}/spots.tsv"),
        "image": fetch(f"her2st/{section}/he.jpg"),
    }


def _transcripts_z0() -> Path:
    root = data_root()
    if root is not None:
        p = root / "merfish_mouse_brain" / "transcripts_z0.csv.gz"
        if not p.exists():
            raise GDTError(f"{p}: missing from the {ENV_VAR} folder {root} (expected the sample-data layout)")
        return p
    src = fetch("merfish_mouse_brain/vizgen_transcripts.gz")
    dst = src.with_name("transcripts_z0.csv.gz")
    if not dst.exists():
        import pandas as pd

        df = pd.read_csv(src, sep=None, engine="python") if src.suffix != ".gz" else pd.read_csv(src)
        if "global_z" not in df.columns:
            raise GDTError(f"{src}: missing column 'global_z'")
        tmp = dst.with_suffix(".tmp.gz")
        df[df["global_z"] == 0].to_csv(tmp, index=False, compression="gzip")
        os.replace(tmp, dst)
    return dst


def fetch_merfish() -> dict[str, Path]:
    """Paths ``{"transcripts", "dapi", "polyT", "cell_boundaries"}`` of the MERFISH mouse-brain mini set (z0)."""
    return {
        "transcripts": _transcripts_z0(),
        "dapi": fetch("merfish_mouse_brain/dapi_z0.jpg"),
        "polyT": fetch("merfish_mouse_brain/polyT_z0.jpg"),
        "cell_boundaries": fetch("merfish_mouse_brain/cell_boundaries_z0.csv.gz"),
    }


def fetch_visium_crop() -> dict[str, Path]:
    """Paths ``{"h5ad", "image"}`` of the squidpy Visium test crop."""
    return {"h5ad": fetch("visium_mouse_brain_crop/test_data.h5ad"), "image": fetch("visium_mouse_brain_crop/test_img.jpg")}
