"""The device path: CUDA vs CPU pixels, out-of-memory retry, batch size from free memory, training AMP."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_gdt.errors import DeviceMemoryError, GDTError
from napari_gdt.models.device import autocast, default_amp, is_out_of_memory
from napari_gdt.rendering.tiles import Region, TileRenderer, choose_batch_size
from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

HAS_CUDA = torch.cuda.is_available()

#: CUDA vs CPU, float output in [0, 1], with TF32 off (plain fp32 on both): max |difference|.
CUDA_CPU_TOL = 1e-4


def _bundle():
    return untrained_bundle(out_channels=3, seed=0, stage_channels=(32, 24, 16, 16), emb_ch=32)


@pytest.fixture(scope="module")
def canvas():
    return synthetic_canvas((48, 48), seed=1)


class _OOMAbove:
    """A stand-in forward that runs out of 'device memory' above ``limit`` tiles per batch."""

    def __init__(self, renderer, limit):
        self.real, self.limit, self.sizes = renderer.forward, limit, []

    def __call__(self, windows, origins):
        self.sizes.append(len(windows))
        if len(windows) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.real(windows, origins)


def test_choose_batch_size_from_free_memory():
    assert choose_batch_size(free_bytes=8 * 2**30, per_tile_bytes=2**20) == 128  # capped
    assert choose_batch_size(free_bytes=64 * 2**20, per_tile_bytes=2**20) == 32  # half of free / per tile, a power of two
    assert choose_batch_size(free_bytes=10 * 2**20, per_tile_bytes=2**20) == 4
    assert choose_batch_size(free_bytes=2**20, per_tile_bytes=2**20) == 1  # never below 1
    assert choose_batch_size(free_bytes=0, per_tile_bytes=0) == 1


def test_oom_retries_at_smaller_batch_with_the_same_pixels(canvas, caplog):
    region = Region(0, 256, 0, 384)
    ref = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", batch_size=8).render_region(region)
    r = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", batch_size=8)
    fake = _OOMAbove(r, limit=2)
    r.forward = fake
    with caplog.at_level(logging.WARNING, logger="napari_gdt.rendering.tiles"):
        out = r.render_region(region)
    assert np.array_equal(out, ref)  # every tile computed once, at the smaller batch
    assert r.batch_size == 2 and r.oom_retries == 2  # 8 -> 4 -> 2
    assert fake.sizes[:3] == [8, 4, 2] and max(fake.sizes[3:]) <= 2
    assert r.stats["computed"] == 24
    msgs = [rec.getMessage() for rec in caplog.records]
    assert any("out of memory at batch size 8" in m and "retrying at batch size 4" in m for m in msgs)
    assert all("\n" not in m for m in msgs)


def test_oom_at_batch_one_is_one_clear_line(canvas):
    r = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", batch_size=4)
    r.forward = _OOMAbove(r, limit=0)
    with pytest.raises(DeviceMemoryError) as e:
        r.render_region(Region(0, 128, 0, 128))
    msg = str(e.value)
    assert "\n" not in msg and "out of memory" in msg and "batch size 1" in msg and "--device cpu" in msg
    assert isinstance(e.value, GDTError)  # the CLI turns it into one line and exit code 2


def test_other_errors_are_not_taken_for_oom(canvas):
    r = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", batch_size=4)

    def broken(windows, origins):
        raise RuntimeError("shape mismatch")

    r.forward = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        r.render_region(Region(0, 64, 0, 64))
    assert r.batch_size == 4
    assert is_out_of_memory(RuntimeError("MPS backend out of memory")) and not is_out_of_memory(ValueError("out of memory"))


def test_precision_changes_cache_keys_and_stays_close(canvas):
    from napari_gdt.rendering.tiles import MemoryTileCache

    region = Region(0, 128, 0, 128)
    a = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", cache=MemoryTileCache())
    b = TileRenderer(_bundle(), canvas, seed=2, tile_px=64, device="cpu", precision="bf16", channels_last=True)
    s = a.tiles_for(region)[0]
    w = a.read_window(s)
    assert a.tile_key(s, w) != b.tile_key(s, w)
    d = np.abs(a.render_region(region) - b.render_region(region)).max()
    assert 0 < d < 0.1  # bf16 convolutions: close, not equal
    with pytest.raises(ValueError, match="precision"):
        TileRenderer(_bundle(), canvas, device="cpu", precision="fp8")


def test_training_amp_choice():
    assert default_amp(torch.device("cpu")) == "fp32"
    with pytest.raises(GDTError, match="fp16 is for GPUs"):
        autocast(torch.device("cpu"), "fp16")


@pytest.mark.skipif(
    not HAS_CUDA, reason="no CUDA device here: the CUDA vs CPU equality test runs only on a machine with an NVIDIA GPU"
)
@pytest.mark.parametrize("name", ["her2st-he", "merfish-dapi"])
def test_cuda_matches_cpu(name):
    """Plain fp32 on both (TF32 off): max |CUDA - CPU| <= 1e-4 on the [0, 1] output; seams on CUDA as on the CPU."""
    from napari_gdt.models.bundle import load_bundle, resolve_model

    path = resolve_model(name)
    b_cpu, b_gpu = load_bundle(path, device="cpu"), load_bundle(path, device="cuda")
    c = synthetic_canvas((60, 60), genes=b_cpu.genes, seed=4, lam=2.0)
    region = Region(64, 576, 64, 576)
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = TileRenderer(b_cpu, c, seed=5, tile_px=128, device="cpu").render_region(region)
        g = TileRenderer(b_gpu, c, seed=5, tile_px=128, device="cuda", batch_size=8)
        out = g.render_region(region)
        one = TileRenderer(b_gpu, c, seed=5, tile_px=512, device="cuda", batch_size=1).render_region(region)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    assert np.abs(out - ref).max() <= CUDA_CPU_TOL
    assert np.abs(out - one).max() <= CUDA_CPU_TOL
    auto = TileRenderer(b_gpu, c, seed=5, tile_px=128, device="cuda")  # batch size from free memory
    assert 1 <= auto.batch_size <= 128


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here: the CUDA training step runs only on a machine with an NVIDIA GPU")
def test_cuda_train_step_with_amp():
    from napari_gdt.training.loop import TrainConfig, Trainer
    from napari_gdt.training.sampling import PairedSection

    genes = [f"G{i}" for i in range(6)]
    c = synthetic_canvas((24, 24), genes=genes, seed=3)
    counts = np.asarray(c.data, dtype=np.float32)
    img = np.clip(np.kron(counts[0] / counts[0].max(), np.ones((8, 8)))[..., None].repeat(3, -1), 0, 1).astype(np.float32)
    cfg = TrainConfig(
        steps=5,
        batch_size=2,
        patch_bins=6,
        ckpt_every=100,
        log_every=1,
        arch=dict(emb_ch=8, n_bin_convs=1, stage_channels=[8, 8, 8], latent_dim=8),
    )
    tr = Trainer([PairedSection(name="s", counts=counts, image=img, px_per_bin=8)], genes, cfg, "cuda", progress=False)
    tr.run()
    assert tr.step == 5 and tr.throughput["steps"] == 5 and tr.amp in ("bf16", "fp32")
