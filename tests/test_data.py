"""Sample-data registry: local override folder, pooch download path, offline error."""

import hashlib

import pytest

from napari_gdt import data
from napari_gdt.errors import GDTError


def test_registry_urls_are_pinned_raw_github():
    for rel in data.REGISTRY:
        url = data.url_for(rel)
        assert url.startswith("https://raw.githubusercontent.com/")
        repo_commit = data.REGISTRY[rel][0]
        assert repo_commit.split("@")[1] in url and len(repo_commit.split("@")[1]) == 40
        assert len(data.REGISTRY[rel][2]) == 64
    assert data.url_for("her2st/C5/he.jpg") == (
        "https://raw.githubusercontent.com/almaan/her2st/85df7411b987a7dec3feff9718b869a7a82091ec/data/ST-imgs/C/C5/5714_HE_BT_E1.jpg"
    )


@pytest.mark.realdata
def test_local_folder_overrides_download(data_dir, monkeypatch):
    monkeypatch.setenv("NAPARI_GDT_DATA", str(data_dir))
    import pooch

    def no_network(*a, **k):
        raise AssertionError("must not download when NAPARI_GDT_DATA is set")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    p = data.fetch_her2st("C5")
    assert set(p) == {"counts", "spots", "image"}
    assert p["spots"] == data_dir / "her2st" / "C5" / "spots.tsv"
    # the local copy is byte-identical to the registered source (same sha256)
    assert hashlib.sha256(p["spots"].read_bytes()).hexdigest() == data.REGISTRY["her2st/C5/spots.tsv"][2]
    m = data.fetch_merfish()
    assert m["transcripts"].name == "transcripts_z0.csv.gz" and m["dapi"].exists()
    v = data.fetch_visium_crop()
    assert v["h5ad"].exists()


def test_offline_without_folder_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_GDT_DATA", raising=False)
    monkeypatch.setenv("NAPARI_GDT_CACHE", str(tmp_path))
    import pooch

    def offline(*a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(pooch, "retrieve", offline)
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=4.0: True)  # the host answers, the download fails
    with pytest.raises(
        GDTError, match=r"could not download sample file her2st/C5/counts\.tsv\.gz .*Set NAPARI_GDT_DATA to a local folder"
    ):
        data.fetch_her2st("C5")
    # no network at all: a short error at once, before pooch is even asked
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=4.0: False)
    with pytest.raises(
        data.OfflineError, match=r"her2st/C5/counts\.tsv\.gz: not in the cache and no network.*set NAPARI_GDT_DATA"
    ):
        data.fetch_her2st("C5")


def test_offline_env_var_never_tries_the_network(monkeypatch):
    monkeypatch.setenv("NAPARI_GDT_OFFLINE", "1")
    assert data._reachable("https://raw.githubusercontent.com/x") is False


def test_download_path_uses_pooch_with_sha256(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_GDT_DATA", raising=False)
    monkeypatch.setenv("NAPARI_GDT_CACHE", str(tmp_path))
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash, fname, path))
        (tmp_path / "f").write_text("x")
        return str(tmp_path / "f")

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=4.0: True)
    data.fetch("merfish_mouse_brain/dapi_z0.jpg")
    url, known, fname, path = calls[0]
    assert url.endswith("/inst/Mini_datasets/Vizgen/Raw/images/mini_dataset_dapi_z0.jpg")
    assert known == "sha256:4e6019729ac67c4a218e02102493078195e7e42ca281e0c122c3824322c5e8b0"
    assert str(path).startswith(str(tmp_path))


def test_merfish_z0_derived_from_source(monkeypatch, tmp_path):
    """Without a local folder, transcripts_z0 is the global_z == 0 rows of the fetched source."""
    import pandas as pd

    monkeypatch.delenv("NAPARI_GDT_DATA", raising=False)
    src = tmp_path / "merfish_mouse_brain" / "vizgen_transcripts.gz"
    src.parent.mkdir(parents=True)
    pd.DataFrame(
        {"global_x": [1.0, 2.0, 3.0], "global_y": [1.0, 2.0, 3.0], "gene": ["A", "B", "C"], "global_z": [0, 1, 0]}
    ).to_csv(src, index=False, compression="gzip")
    monkeypatch.setattr(data, "fetch", lambda rel: src if rel.endswith("vizgen_transcripts.gz") else tmp_path / rel)
    out = data._transcripts_z0()
    df = pd.read_csv(out)
    assert list(df["gene"]) == ["A", "C"] and (df["global_z"] == 0).all()


def test_bad_override_and_section(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_GDT_DATA", str(tmp_path / "nope"))
    with pytest.raises(GDTError, match=r"NAPARI_GDT_DATA=.*nope: no such folder"):
        data.fetch_her2st("C5")
    monkeypatch.setenv("NAPARI_GDT_DATA", str(tmp_path))
    with pytest.raises(GDTError, match=r"her2st/C5/counts\.tsv\.gz: missing from the NAPARI_GDT_DATA folder"):
        data.fetch_her2st("C5")
    with pytest.raises(GDTError, match="her2st section 'C9' is not in the sample data"):
        data.fetch_her2st("C9")


def test_describe_gives_public_source():
    d = data.describe("/somewhere/her2st/C2/he.jpg")
    assert d["source"] == data.url_for("her2st/C2/he.jpg") and d["sha256"] == data.REGISTRY["her2st/C2/he.jpg"][2]
    t = data.describe("/x/merfish_mouse_brain/transcripts_z0.csv.gz")
    assert t["source"].endswith("vizgen_transcripts.gz") and "global_z == 0" in t["derived"]
    assert data.describe("/tmp/mine.png") == {"file": "/tmp/mine.png"}
