"""benchmarks/gpu_check.py runs its checks on the CPU at small sizes (a smoke test of the GPU command)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_gpu_check_smoke_on_cpu(gpu_check, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "check.json"
    try:
        rc = gpu_check.main(["--device", "cpu", "--smoke", "--train", "2", "--json", str(out), "--dir", str(tmp_path / "w")])
    finally:  # later tests in this process compare pixels with subprocesses that use torch's default
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert rc == 0, text
    assert not [r for r in rows if r["status"] == "FAIL"], text
    checks = {r["check"] for r in rows}
    assert {"cpu vs cpu (default)", "seams on cpu", "speed", "lazy pan", "export", "train"} <= checks
    assert {r["model"] for r in rows if r["check"].startswith("cpu vs cpu")} == {"her2st-he", "merfish-dapi", "ist-shaped"}
    assert all(r["tiles_s"] > 0 for r in rows if r["check"] == "speed")
    train = next(r for r in rows if r["check"] == "train")
    assert train["steps"] > 0 and train["steps_s"] > 0
    assert "check" in text and "| status" in text  # the one table


def test_gpu_check_reports_a_failing_check(gpu_check, tmp_path, capsys, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(gpu_check, "check_seams", broken)
    rc = gpu_check.main(["--device", "cpu", "--smoke", "--skip", "equality,speed,lazy,export", "--dir", str(tmp_path / "w")])
    text = capsys.readouterr().out
    assert rc == 1 and "ERROR RuntimeError: injected" in text and "FAIL" in text
