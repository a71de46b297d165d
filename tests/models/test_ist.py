"""IST-editing generators: strict loading of their g_ema layout, seamless tiles, safe import, CLI."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from napari_gdt.cli import main
from napari_gdt.errors import BundleError
from napari_gdt.models.base import trace_geometry
from napari_gdt.models.bundle import load_bundle
from napari_gdt.models.ist import PUBLISHED_CONFIG, ISTGenerator, ist_state_shapes
from napari_gdt.models.ist_import import import_ist_checkpoint, infer_ist_config, load_ist_checkpoint, read_gene_list
from napari_gdt.rendering.tiles import Region, TileRenderer
from napari_gdt.synthetic import synthetic_canvas

# --------------------------------------------------------------------------------------------
# The g_ema layout of IST-editing's published Xenium mouse-pup generator (train.sh: --gene=379
# --size=128 --latent=512 --kernel_size=3, n_mlp 8, channel multiplier 2), DAPI (1 channel).
# Every key with its shape, written out. C = output channels (1 DAPI, 3 H&E).
# --------------------------------------------------------------------------------------------
C = 1
PUBLISHED_G_EMA = {
    # per-bin gene MLP (n_mlp // 2 = 4 layers): 379 -> 256 -> 256 -> 256 -> 2 x 64
    "drive.0.weight": (256, 379), "drive.0.bias": (256,),
    "drive.1.weight": (256, 256), "drive.1.bias": (256,),
    "drive.2.weight": (256, 256), "drive.2.bias": (256,),
    "drive.3.weight": (128, 256), "drive.3.bias": (128,),
    # mapping network: style.0 is the pixel norm (no tensors), 8 linear layers
    **{f"style.{i}.{p}": ((512, 512) if p == "weight" else (512,)) for i in range(1, 9) for p in ("weight", "bias")},
    # bin -> 2x: feature and image-skip up-convolutions without style
    "gconv_out.conv.weight": (1, 64, 64, 3, 3), "gconv_out.conv.blur.kernel": (3, 3),
    "gconv_out.noise.weight": (1,), "gconv_out.activate.bias": (64,),
    "gconv_skip.conv.weight": (1, C, 64, 3, 3), "gconv_skip.conv.blur.kernel": (3, 3),
    "gconv_skip.noise.weight": (1,), "gconv_skip.activate.bias": (C,),
    # stage 1 (x2 up-conv + 3x3 conv)
    "convs.0.conv.weight": (1, 512, 64, 3, 3), "convs.0.conv.blur.kernel": (3, 3),
    "convs.0.conv.modulation.weight": (64, 512), "convs.0.conv.modulation.bias": (64,),
    "convs.0.noise.weight": (1,), "convs.0.activate.bias": (512,),
    "convs.1.conv.weight": (1, 512, 512, 3, 3),
    "convs.1.conv.modulation.weight": (512, 512), "convs.1.conv.modulation.bias": (512,),
    "convs.1.noise.weight": (1,), "convs.1.activate.bias": (512,),
    # stage 2
    "convs.2.conv.weight": (1, 512, 512, 3, 3), "convs.2.conv.blur.kernel": (3, 3),
    "convs.2.conv.modulation.weight": (512, 512), "convs.2.conv.modulation.bias": (512,),
    "convs.2.noise.weight": (1,), "convs.2.activate.bias": (512,),
    "convs.3.conv.weight": (1, 512, 512, 3, 3),
    "convs.3.conv.modulation.weight": (512, 512), "convs.3.conv.modulation.bias": (512,),
    "convs.3.noise.weight": (1,), "convs.3.activate.bias": (512,),
    # stage 3
    "convs.4.conv.weight": (1, 512, 512, 3, 3), "convs.4.conv.blur.kernel": (3, 3),
    "convs.4.conv.modulation.weight": (512, 512), "convs.4.conv.modulation.bias": (512,),
    "convs.4.noise.weight": (1,), "convs.4.activate.bias": (512,),
    "convs.5.conv.weight": (1, 512, 512, 3, 3),
    "convs.5.conv.modulation.weight": (512, 512), "convs.5.conv.modulation.bias": (512,),
    "convs.5.noise.weight": (1,), "convs.5.activate.bias": (512,),
    # stage 4: up-conv only (convs.7 is an identity: no tensors)
    "convs.6.conv.weight": (1, 512, 512, 3, 3), "convs.6.conv.blur.kernel": (3, 3),
    "convs.6.conv.modulation.weight": (512, 512), "convs.6.conv.modulation.bias": (512,),
    "convs.6.noise.weight": (1,), "convs.6.activate.bias": (512,),
    # to-image layers, one per stage, each with a learned 3x3 skip upsampler and a fixed 5x5 filter
    **{
        k: v
        for j in range(4)
        for k, v in {
            f"to_rgbs.{j}.conv.weight": (1, C, 512, 3, 3),
            f"to_rgbs.{j}.conv.modulation.weight": (512, 512),
            f"to_rgbs.{j}.conv.modulation.bias": (512,),
            f"to_rgbs.{j}.bias": (1, C, 1, 1),
            f"to_rgbs.{j}.upsample.weight": (1, 1, 3, 3),
            f"to_rgbs.{j}.upsample.kernel": (5, 5),
        }.items()
    },
    # fixed per-crop noise buffers (13 -> 2*13-5 = 21 -> 37 -> 69 -> 133)
    "noises.noise_0": (1, 1, 13, 13), "noises.noise_1": (1, 1, 21, 21),
    "noises.noise_2": (1, 1, 21, 21), "noises.noise_3": (1, 1, 37, 37),
    "noises.noise_4": (1, 1, 37, 37), "noises.noise_5": (1, 1, 69, 69),
    "noises.noise_6": (1, 1, 69, 69), "noises.noise_7": (1, 1, 133, 133),
}  # fmt: skip


def ist_layout(G, C, L, n_mlp, c0, stages, hidden, n_drive, locl=13):
    """The same naming rules for any widths (so tests can use small models)."""
    d = {}
    dims = [G] + [hidden] * (n_drive - 1) + [2 * c0]
    for i in range(n_drive):
        d[f"drive.{i}.weight"], d[f"drive.{i}.bias"] = (dims[i + 1], dims[i]), (dims[i + 1],)
    for i in range(1, n_mlp + 1):
        d[f"style.{i}.weight"], d[f"style.{i}.bias"] = (L, L), (L,)
    for name, cout in (("gconv_out", c0), ("gconv_skip", C)):
        d.update(
            {
                f"{name}.conv.weight": (1, cout, c0, 3, 3),
                f"{name}.conv.blur.kernel": (3, 3),
                f"{name}.noise.weight": (1,),
                f"{name}.activate.bias": (cout,),
            }
        )
    cin = c0
    for j, cout in enumerate(stages):
        for i, (a, up) in ((2 * j, (cin, True)), (2 * j + 1, (cout, False))):
            if i == 2 * len(stages) - 1:
                continue  # identity
            d.update(
                {
                    f"convs.{i}.conv.weight": (1, cout, a, 3, 3),
                    f"convs.{i}.conv.modulation.weight": (a, L),
                    f"convs.{i}.conv.modulation.bias": (a,),
                    f"convs.{i}.noise.weight": (1,),
                    f"convs.{i}.activate.bias": (cout,),
                }
            )
            if up:
                d[f"convs.{i}.conv.blur.kernel"] = (3, 3)
        d.update(
            {
                f"to_rgbs.{j}.conv.weight": (1, C, cout, 3, 3),
                f"to_rgbs.{j}.conv.modulation.weight": (cout, L),
                f"to_rgbs.{j}.conv.modulation.bias": (cout,),
                f"to_rgbs.{j}.bias": (1, C, 1, 1),
                f"to_rgbs.{j}.upsample.weight": (1, 1, 3, 3),
                f"to_rgbs.{j}.upsample.kernel": (5, 5),
            }
        )
        cin = cout
    res = locl
    for i in range(2 * len(stages)):
        res = 2 * res - 5 if i % 2 == 1 else res
        d[f"noises.noise_{i}"] = (1, 1, res, res)
    return d


SMALL = dict(G=6, L=16, n_mlp=4, c0=6, stages=(12, 8, 6, 4), hidden=16, n_drive=2)
GENES = ["Acta2", "Cdh1", "Epcam", "Krt5", "Vim", "Ptprc"]


def random_ist_state(C: int, seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    """Random weights in the IST layout, built only from key names and shapes."""
    p = dict(SMALL, **kw)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in ist_layout(C=C, **p).items():
        if k.endswith("blur.kernel"):
            t = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0]))
            sd[k] = t / t.sum() * 4
        elif k.endswith("upsample.kernel"):
            t = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
            sd[k] = torch.outer(t, t) / 256 * 4
        elif k.endswith("upsample.weight"):  # about bilinear; the fixed 5x5 filter has gain 4
            t = torch.tensor([0.5, 1.0, 0.5])
            sd[k] = (torch.outer(t, t) / 4 * (1 + 0.1 * torch.randn(3, 3, generator=g)))[None, None]
        elif k.endswith("modulation.bias"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("noise.weight"):
            sd[k] = 0.3 * torch.randn(shape, generator=g)
        elif k.startswith(("to_rgbs", "gconv_skip")) and k.endswith("bias") and "modulation" not in k:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif k.startswith(("to_rgbs", "gconv_skip")) and k.endswith("conv.weight"):
            sd[k] = 0.05 * torch.randn(shape, generator=g)  # keep the image inside [-1, 1] mostly
        else:
            sd[k] = torch.randn(shape, generator=g)
    return sd


def save_checkpoint(path, sd, **extra):
    args = argparse.Namespace(
        gene=SMALL["G"], size=128, latent=SMALL["L"], stain="he", img_chn=3, kernel_size=3, ckpt=None, iter=800000
    )
    torch.save(
        {
            "g": sd,
            "g_ema": sd,
            "d": {"w": torch.zeros(2)},
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
            "args": args,
            "ada_aug_p": 0.0,
            **extra,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ist")
    save_checkpoint(d / "800000.pt", random_ist_state(3))
    (d / "genes.txt").write_text("# panel in training order\n" + "\n".join(GENES) + "\n")
    return d


@pytest.fixture(scope="module")
def he_bundle(ckpt_dir):
    card = import_ist_checkpoint(
        ckpt_dir / "800000.pt", ckpt_dir / "genes.txt", output="he", out_path=ckpt_dir / "he.safetensors"
    )
    return card, load_bundle(ckpt_dir / "he.safetensors")


# --------------------------------------------------------------------------------- layout
def test_published_layout_every_key_and_shape():
    assert len(PUBLISHED_G_EMA) == 103
    assert ist_layout(379, 1, 512, 8, 64, (512,) * 4, 256, 4) == PUBLISHED_G_EMA
    assert ist_state_shapes(PUBLISHED_CONFIG) == PUBLISHED_G_EMA
    he = ist_state_shapes(dict(PUBLISHED_CONFIG, out_channels=3))
    assert he["to_rgbs.3.conv.weight"] == (1, 3, 512, 3, 3) and he["gconv_skip.activate.bias"] == (3,)
    merfish = ist_state_shapes(dict(PUBLISHED_CONFIG, n_genes=500))
    assert merfish["drive.0.weight"] == (256, 500)


def test_config_inferred_from_shapes():
    for C_ in (1, 3):
        sd = {k: torch.empty(v, device="meta") for k, v in ist_layout(379, C_, 512, 8, 64, (512,) * 4, 256, 4).items()}
        assert infer_ist_config(sd) == dict(PUBLISHED_CONFIG, out_channels=C_)
    sd = random_ist_state(1)
    cfg = infer_ist_config(sd)
    assert (
        cfg["n_genes"] == 6
        and cfg["stage_channels"] == [12, 8, 6, 4]
        and cfg["base_channels"] == 6
        and cfg["n_mlp"] == 4
        and cfg["n_drive"] == 2
    )
    m = ISTGenerator(**cfg)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == ist_layout(C=1, **SMALL)
    m.load_state_dict(sd, strict=True)


def test_geometry_matches_ist_tiles_and_forward():
    m = ISTGenerator(**infer_ist_config(random_ist_state(1)))
    g = m.geometry
    # IST-editing: an 8x8-bin window of 32-px bins gives the central 128 px (64 px halo each side)
    assert (g.px_per_bin, g.out_len(8), g.out_origin(0), g.out_origin(4), g.halo_px) == (32, 128, 64, 192, 64)
    assert trace_geometry(m.spatial_ops()) == g
    assert g.window_for(128, 256) == (2, 8, 0)  # tile 1 of a 128-px grid reads bins 2..9
    w = m.styles(0)
    for n in (5, 6, 9, 12):
        y = m(torch.rand(2, 6, n, n) * 4, torch.tensor([[0, 0], [3, -2]]), w, 0)
        assert y.shape == (2, 1, g.out_len(n), g.out_len(n))


def test_window_translation_is_exact():
    """A window shifted by k bins gives the same pixels shifted by 32 k px (noise is absolute)."""
    m = ISTGenerator(**infer_ist_config(random_ist_state(1)))
    m.load_state_dict(random_ist_state(1), strict=True)
    x = torch.rand(1, 6, 12, 12) * 5
    w = m.styles(3)
    with torch.no_grad():
        big = m.raw_image(x, torch.tensor([[10, 20]]), w, 3)  # 256 px from bins 10.. / 20..
        small = m.raw_image(x[:, :, 4:12, 2:10].contiguous(), torch.tensor([[14, 22]]), w, 3)
        other_place = m.raw_image(x[:, :, 4:12, 2:10].contiguous(), torch.tensor([[15, 22]]), w, 3)
    assert torch.allclose(small[0], big[0, :, 128:256, 64:192], atol=1e-5)
    assert (small - other_place).abs().max() > 1e-3  # the noise is tied to where the tile is


# ----------------------------------------------------------------------- import + render
def test_bundle_loads_strictly_and_has_full_card(ckpt_dir, he_bundle):
    card, b = he_bundle
    assert b.model.arch == "ist-stylegan2" and isinstance(b.model, ISTGenerator)
    sd = random_ist_state(3)
    for k, v in b.model.state_dict().items():
        assert torch.equal(v, sd[k]), k  # every tensor came through unchanged
    assert set(b.model.state_dict()) == set(sd)
    assert card["px_per_bin"] == 32 and card["tile_px"] == 128 and card["halo_px"] == 64
    assert card["um_per_px"] == 0.2125 and card["normalisation"]["bin_um"] == pytest.approx(6.8)
    assert card["normalisation"]["log1p"] is False
    assert card["output"] == {"kind": "he", "channels": ["R", "G", "B"], "stain": "H&E"}
    assert card["genes"] == GENES
    prov = card["provenance"]
    assert prov["checkpoint"] == "800000.pt"
    assert prov["checkpoint_sha256"] == hashlib.sha256((ckpt_dir / "800000.pt").read_bytes()).hexdigest()
    assert "IST-editing" in prov["paper"] and "CC BY-NC-SA" in prov["licence"]
    assert prov["training_args"]["size"] == 128 and prov["training_args"]["ckpt"] is None


def test_tiles_equal_one_piece_1024(he_bundle):
    _, b = he_bundle
    canvas = synthetic_canvas((40, 40), genes=GENES, seed=2, bin_um=6.8, lam=4.0)
    region = Region(0, 1024, 0, 1024)
    tiled = TileRenderer(b, canvas, seed=7, tile_px=128, device="cpu").render_region(region)
    whole = TileRenderer(b, canvas, seed=7, tile_px=1024, device="cpu").render_region(region)
    assert tiled.shape == (1024, 1024, 3) and tiled.dtype == np.float32
    inside = ((tiled > 0.0) & (tiled < 1.0)).mean()
    assert inside > 0.5 and tiled.std() > 0.02, (inside, tiled.std())  # a real image, not saturated
    assert np.abs(tiled - whole).max() <= 1e-5
    other_seed = TileRenderer(b, canvas, seed=8, tile_px=256, device="cpu").render_region(Region(0, 256, 0, 256))
    assert np.abs(other_seed - tiled[:256, :256]).max() > 1e-3


# ------------------------------------------------------------------------------- errors
def _import(ckpt, genes, **kw):
    return import_ist_checkpoint(ckpt, genes, out_path=ckpt.with_suffix(".safetensors"), **kw)


def test_missing_extra_and_wrong_shape_are_listed(ckpt_dir, tmp_path):
    genes = ckpt_dir / "genes.txt"
    sd = random_ist_state(3)
    del sd["convs.1.conv.modulation.bias"], sd["to_rgbs.2.upsample.weight"]
    with pytest.raises(
        BundleError,
        match=r"missing\.pt: 'g_ema' does not match .*2 missing: convs\.1\.conv\.modulation\.bias, to_rgbs\.2\.upsample\.weight",
    ):
        _import(save_checkpoint(tmp_path / "missing.pt", sd), genes)
    sd = random_ist_state(3)
    sd["to_rgbs.2.bias"] = torch.zeros(1, 4, 1, 1)
    sd["convs.3.conv.weight"] = torch.zeros(1, 8, 8, 5, 5)
    with pytest.raises(
        BundleError,
        match=(
            r"2 with wrong shapes: convs\.3\.conv\.weight \(1, 8, 8, 5, 5\) != expected \(1, 8, 8, 3, 3\), "
            r"to_rgbs\.2\.bias \(1, 4, 1, 1\) != expected \(1, 3, 1, 1\)"
        ),
    ):
        _import(save_checkpoint(tmp_path / "shape.pt", sd), genes)
    sd = random_ist_state(3)
    sd["input.input"] = torch.zeros(1, 64, 4, 4)
    with pytest.raises(BundleError, match=r"1 unexpected: input\.input"):
        _import(save_checkpoint(tmp_path / "extra.pt", sd), genes)
    sd = random_ist_state(3)
    del sd["drive.0.weight"]
    with pytest.raises(BundleError, match=r"cannot infer the gene count: tensor 'drive\.0\.weight' is missing"):
        _import(save_checkpoint(tmp_path / "nodrive.pt", sd), genes)
    sd = random_ist_state(3)
    sd["style.2.bias"][0] = float("nan")
    with pytest.raises(BundleError, match=r"NaN or Inf values: style\.2\.bias"):
        _import(save_checkpoint(tmp_path / "nan.pt", sd), genes)
    assert not (tmp_path / "missing.safetensors").exists()


def test_not_a_checkpoint(ckpt_dir, tmp_path):
    genes = ckpt_dir / "genes.txt"
    (tmp_path / "text.pt").write_text("this is a text file, not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    full = (ckpt_dir / "800000.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(full[: len(full) // 2])
    for name in ("text.pt", "empty.pt", "trunc.pt"):
        with pytest.raises(BundleError, match=rf"{name}: not a PyTorch checkpoint"):
            _import(tmp_path / name, genes)
    with pytest.raises(BundleError, match=r"nothere\.pt: no such checkpoint file"):
        _import(tmp_path / "nothere.pt", genes)
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(BundleError, match=r"other\.pt: checkpoint has no 'g_ema' entry \(its keys: model\)"):
        _import(tmp_path / "other.pt", genes)


class _Payload:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_foreign_globals_is_refused(ckpt_dir, tmp_path):
    genes = ckpt_dir / "genes.txt"
    marker = tmp_path / "code-ran"
    save_checkpoint(tmp_path / "evil.pt", random_ist_state(3), extra=_Payload(marker))
    with pytest.raises(BundleError, match=r"evil\.pt: refusing to unpickle '(posix|nt)\.system'.*argparse\.Namespace"):
        _import(tmp_path / "evil.pt", genes)
    assert not marker.exists()
    import fractions

    save_checkpoint(tmp_path / "frac.pt", random_ist_state(3), extra=fractions.Fraction(1, 3))
    with pytest.raises(BundleError, match=r"frac\.pt: refusing to unpickle 'fractions\.Fraction'"):
        _import(tmp_path / "frac.pt", genes)


def test_gene_list_and_output_checks(ckpt_dir, tmp_path):
    ck = ckpt_dir / "800000.pt"
    (tmp_path / "five.txt").write_text("\n".join(GENES[:5]))
    with pytest.raises(BundleError, match=r"five\.txt: lists 5 genes but the checkpoint's generator takes 6"):
        import_ist_checkpoint(ck, tmp_path / "five.txt", out_path=tmp_path / "x.safetensors")
    (tmp_path / "dup.txt").write_text("\n".join(GENES[:5] + ["Vim"]))
    with pytest.raises(BundleError, match=r"dup\.txt: duplicate genes: Vim"):
        read_gene_list(tmp_path / "dup.txt")
    with pytest.raises(BundleError, match=r"800000\.pt: --output dapi needs 1 output channel\(s\) but the generator outputs 3"):
        import_ist_checkpoint(ck, ckpt_dir / "genes.txt", output="dapi", out_path=tmp_path / "x.safetensors")
    # 10x features.tsv.gz: the Gene Expression rows in file order (what IST-editing used)
    rows = [f"ENSMUSG{i:05d}\t{g}\tGene Expression" for i, g in enumerate(GENES)] + [
        "NegControlProbe_1\tNegControlProbe_1\tNegative Control Probe"
    ]
    with gzip.open(tmp_path / "features.tsv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    assert read_gene_list(tmp_path / "features.tsv.gz") == GENES
    (tmp_path / "genes.json").write_text(json.dumps(GENES))
    assert read_gene_list(tmp_path / "genes.json") == GENES


def test_bare_state_dict_and_dapi_auto(tmp_path, ckpt_dir):
    sd = random_ist_state(1, seed=4)
    torch.save(sd, tmp_path / "g_ema_only.pt")
    got, info = load_ist_checkpoint(tmp_path / "g_ema_only.pt")
    assert info["weights_from"] == "bare state dict" and set(got) == set(sd)
    card = import_ist_checkpoint(tmp_path / "g_ema_only.pt", ckpt_dir / "genes.txt", out_path=tmp_path / "dapi.safetensors")
    assert card["output"]["kind"] == "fluorescence" and card["output"]["channels"] == ["DAPI"]
    assert card["name"] == "ist-editing-dapi-g_ema_only"


# ---------------------------------------------------------------------------------- CLI
def test_cli_import_info_render_end_to_end(ckpt_dir, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    rc = main(
        ["import-ist", str(ckpt_dir / "800000.pt"), "--genes", str(ckpt_dir / "genes.txt"), "--output", "he", "--out", str(out)]
    )
    assert rc == 0
    said = capsys.readouterr().out
    assert "ist-stylegan2 (H&E), 6 genes, 4 stages, 32 px per bin (6.8 µm), tile 128 px, halo 64 px" in said
    assert main(["info", str(out), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["arch"] == "ist-stylegan2" and card["px_per_bin"] == 32 and card["provenance"]["source"] == "IST-editing"
    canvas = synthetic_canvas((16, 16), genes=GENES, seed=5, bin_um=6.8).to_ome_zarr(tmp_path / "c.ome.zarr")
    outs = {}
    for t in (128, 384):
        o = tmp_path / f"r{t}.npy"
        assert (
            main(
                [
                    "render",
                    "--model",
                    str(out),
                    "--expression",
                    str(canvas),
                    "--out",
                    str(o),
                    "--region",
                    "0:384,64:448",
                    "--tile-px",
                    str(t),
                    "--device",
                    "cpu",
                    "--seed",
                    "2",
                ]
            )
            == 0
        )
        outs[t] = np.load(o)
    assert outs[128].shape == (384, 384, 3)
    assert np.abs(outs[128] - outs[384]).max() <= 1e-5


def test_cli_errors_exit_2(ckpt_dir, tmp_path, capsys):
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    rc = main(
        ["import-ist", str(tmp_path / "bad.pt"), "--genes", str(ckpt_dir / "genes.txt"), "--out", str(tmp_path / "m.safetensors")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "napari-gdt import-ist: error:" in err and "bad.pt: not a PyTorch checkpoint" in err
    assert len(err.strip().splitlines()) == 1
    rc = main(
        [
            "import-ist",
            str(ckpt_dir / "800000.pt"),
            "--genes",
            str(tmp_path / "nogenes.txt"),
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    )
    assert rc == 2 and "nogenes.txt: no such gene list file" in capsys.readouterr().err
