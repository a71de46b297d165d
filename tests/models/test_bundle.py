"""Model bundle format: round trip and clear errors."""

import json

import numpy as np
import pytest
import torch

from napari_gdt.errors import BundleError, GenePanelError, RegionError
from napari_gdt.models.bundle import load_bundle, save_bundle
from napari_gdt.models.device import get_device
from napari_gdt.models.gdt import GDTGenerator
from napari_gdt.rendering.tiles import Region, TileRenderer

GENES = [f"G{i}" for i in range(6)]


def _model():
    torch.manual_seed(0)
    return GDTGenerator(n_genes=6, out_channels=1, emb_ch=8, stage_channels=(8, 8), latent_dim=8)


@pytest.fixture
def bundle_path(tmp_path):
    p = tmp_path / "m.safetensors"
    save_bundle(
        p,
        _model(),
        GENES,
        um_per_px=0.5,
        output={"kind": "fluorescence", "channels": ["DAPI"]},
        tile_px=64,
        provenance={"note": "test"},
    )
    return p


def test_round_trip(bundle_path):
    b = load_bundle(bundle_path)
    assert b.genes == GENES and b.px_per_bin == 4 and b.um_per_px == 0.5
    assert b.card["halo_px"] == b.model.geometry.halo_px and b.card["output"]["channels"] == ["DAPI"]
    for k, v in _model().state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert len(b.digest) == 64 and load_bundle(bundle_path).digest == b.digest


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match=r"nope\.safetensors: no such model file"):
        load_bundle(tmp_path / "nope.safetensors")


def test_truncated_file(bundle_path, tmp_path):
    raw = bundle_path.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match="trunc.safetensors"):
        load_bundle(bad)


def test_not_a_bundle(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_text("hello, not tensors")
    with pytest.raises(BundleError, match=r"x\.safetensors: not a model bundle"):
        load_bundle(bad)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(BundleError, match="no 'napari_gdt' card"):
        load_bundle(plain)


def _rewrite(path, tmp_path, card_fn=None, tensor_fn=None):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        card = json.loads(f.metadata()["napari_gdt"])
    t = load_file(str(path))
    if card_fn:
        card_fn(card)
    if tensor_fn:
        tensor_fn(t)
    out = tmp_path / "edited.safetensors"
    save_file(t, str(out), metadata={"napari_gdt": json.dumps(card)})
    return out


def test_unknown_arch(bundle_path, tmp_path):
    p = _rewrite(bundle_path, tmp_path, card_fn=lambda c: c.update(arch="stylegan9"))
    with pytest.raises(BundleError, match=r"edited.safetensors: unknown architecture 'stylegan9' in field 'arch'"):
        load_bundle(p)


def test_metadata_tensor_mismatch(bundle_path, tmp_path):
    p = _rewrite(bundle_path, tmp_path, card_fn=lambda c: c["config"].update(emb_ch=16))
    with pytest.raises(
        BundleError,
        match=r"edited.safetensors: metadata does not match the tensors.*wrong shapes: convs.0.affine.bias \(8,\) != \(16,\)",
    ):
        load_bundle(p)
    p = _rewrite(bundle_path, tmp_path, tensor_fn=lambda t: t.pop("to_img.bias"))
    with pytest.raises(BundleError, match="missing tensors: to_img.bias"):
        load_bundle(p)
    p = _rewrite(bundle_path, tmp_path, card_fn=lambda c: c.update(genes=c["genes"][:-1]))
    with pytest.raises(BundleError, match="field 'genes' lists 5 genes but the architecture takes 6"):
        load_bundle(p)


def test_nan_weights(bundle_path, tmp_path):
    def poison(t):
        t["embed.weight"][0, 0, 0, 0] = float("nan")

    p = _rewrite(bundle_path, tmp_path, tensor_fn=poison)
    with pytest.raises(BundleError, match="tensor 'embed.weight' contains NaN or Inf"):
        load_bundle(p)


def test_canvas_missing_genes(bundle_path):
    from napari_gdt.expression.canvas import ExpressionCanvas

    cv = ExpressionCanvas(np.zeros((4, 8, 8), np.float32), ["G0", "G1", "G2", "X"], bin_um=2.0)
    with pytest.raises(GenePanelError, match=r"lacks 3 gene\(s\) of the model panel: G3, G4, G5"):
        TileRenderer(load_bundle(bundle_path), cv, device="cpu")
    with pytest.warns(UserWarning, match="zero-filling 3"):
        TileRenderer(load_bundle(bundle_path), cv, device="cpu", zero_fill=True)


def test_region_outside_canvas(bundle_path):
    from napari_gdt.expression.canvas import ExpressionCanvas

    cv = ExpressionCanvas(np.zeros((6, 8, 8), np.float32), GENES, bin_um=2.0)
    r = TileRenderer(load_bundle(bundle_path), cv, device="cpu")
    with pytest.raises(RegionError, match=r"region 0:40,0:10 lies outside the canvas \(0:32,0:32"):
        r.render_region(Region(0, 40, 0, 10))


def test_device_choice(monkeypatch):
    assert get_device("cpu").type == "cpu"
    monkeypatch.setenv("NAPARI_GDT_DEVICE", "cpu")
    assert get_device("auto").type == "cpu"
    monkeypatch.delenv("NAPARI_GDT_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device("auto").type == expected
    if not torch.cuda.is_available():
        from napari_gdt.errors import GDTError

        with pytest.raises(GDTError, match="CUDA is not available"):
            get_device("cuda")
