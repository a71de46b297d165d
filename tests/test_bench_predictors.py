"""benchmarks/bench_predictors.py: leave-one-section-out read-outs of expression. Its non-linear read-outs
must find a non-linear signal when there is one (else "nothing beats ridge" would say nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bp():
    return load_benchmark("bench_predictors")


def _pairs(fn, n_sections=3, n=160, genes=30, seed=0):
    rng = np.random.default_rng(seed)
    load = rng.normal(size=(2, genes))
    out = []
    for s in range(n_sections):
        f = rng.normal(size=(n, 2))
        rate = np.exp(1.5 + 0.8 * f @ load) * rng.uniform(0.5, 2.0)  # per-section depth
        X = rng.poisson(rate * rng.uniform(0.7, 1.3, (n, 1))).astype(float)
        y = fn(f) + rng.normal(0, 0.05, n)
        out.append({"label": f"s{s}", "genes": [f"g{i}" for i in range(genes)], "X": X,
                    "Y": {"area_fraction": y, "density_per_mm2": y}, "units": "spot footprints"})  # fmt: skip
    return out


def test_linear_signal_ridge_leads(bp):
    res = bp.run(_pairs(lambda f: 0.3 + 0.1 * f[:, 0]))
    mean = {k: np.mean([r[k] for r in res.values()]) for k in next(iter(res.values()))}
    assert mean["ridge"] > 0.8 and mean["ridge"] > mean["k nearest neighbours (20 PCs)"]


def test_nonlinear_signal_is_found(bp):
    # a signal no linear read-out of log CPM sees well, at the her2st scale (3 sections of 160 spots)
    res = bp.run(_pairs(lambda f: 0.3 + 0.1 * np.sin(2 * f[:, 0])))
    mean = {k: np.mean([r[k] for r in res.values()]) for k in next(iter(res.values()))}
    assert mean["ridge"] < 0.5 and abs(mean["library_size"]) < 0.2
    assert mean["kernel ridge (RBF, 20 PCs)"] > mean["ridge"] + 0.15
    assert mean["k nearest neighbours (20 PCs)"] > mean["ridge"] + 0.15
