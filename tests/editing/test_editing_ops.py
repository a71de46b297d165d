"""Edit operations against direct numpy computations on small arrays."""

import numpy as np
import pytest

from napari_gdt.editing import ops


@pytest.fixture
def chunk(rng):
    return rng.poisson(3.0, size=(5, 6, 7)).astype(np.float32)


@pytest.fixture
def mask(rng):
    m = rng.random((6, 7)) < 0.4
    m[0, 0] = True
    m[5, 6] = False
    return m


def _outside_untouched(new, old, mask, genes):
    other = np.setdiff1d(np.arange(old.shape[0]), genes)
    assert np.array_equal(new[:, ~mask], old[:, ~mask])
    assert np.array_equal(new[other], old[other])


def test_scale(chunk, mask):
    new = ops.scale(chunk, mask, [1, 3], factor=2.5)
    expect = chunk.copy()
    for g in (1, 3):
        expect[g][mask] = chunk[g][mask] * 2.5
    assert np.array_equal(new, expect)
    _outside_untouched(new, chunk, mask, [1, 3])
    assert new is not chunk and np.array_equal(chunk, chunk.copy())  # input not modified


def test_scale_others_like_ist_script(chunk, mask):
    new = ops.scale(chunk, mask, [0], factor=2.0, others=0.0)
    expect = chunk.copy()
    expect[0][mask] *= 2.0
    for g in range(1, 5):
        expect[g][mask] = 0.0
    assert np.array_equal(new, expect)


def test_set_add_knockout(chunk, mask):
    s = ops.set_value(chunk, mask, [2], 7.0)
    e = chunk.copy()
    e[2][mask] = 7.0
    assert np.array_equal(s, e)

    a = ops.add(chunk, mask, [0, 4], -2.0)
    e = chunk.copy()
    for g in (0, 4):
        e[g][mask] = np.maximum(chunk[g][mask] - 2.0, 0.0)
    assert np.array_equal(a, e)
    assert (a >= 0).all()

    k = ops.knockout(chunk, mask, None)
    e = chunk.copy()
    e[:, mask] = 0
    assert np.array_equal(k, e)


def test_transfer_moves_mean_exactly(chunk, mask):
    genes = [0, 1, 2]
    chunk = chunk.copy()
    chunk[2][mask] = 0.0  # a gene absent from the edited region: additive fallback
    mean_to = chunk[genes][:, mask].mean(axis=1)
    mean_from = np.array([9.0, 1.0, 4.0])
    for s in (0.0, 0.5, 1.0):
        new = ops.transfer(chunk, mask, genes, mean_from, mean_to, strength=s)
        factor = np.where(mean_to > 0, (1 - s) + s * mean_from / np.where(mean_to > 0, mean_to, 1), 1.0)
        shift = np.where(mean_to > 0, 0.0, s * mean_from)
        expect = chunk.copy()
        for j, g in enumerate(genes):
            expect[g][mask] = (chunk[g][mask].astype(np.float64) * factor[j] + shift[j]).astype(np.float32)
        np.testing.assert_allclose(new, expect, rtol=1e-6)
        got_mean = new[genes][:, mask].mean(axis=1)
        np.testing.assert_allclose(got_mean, (1 - s) * mean_to + s * mean_from, rtol=1e-5)
        _outside_untouched(new, chunk, mask, genes)


def test_second_moment_and_eigen_edit_direct(rng):
    """The eigen edit equals x @ U_s diag(w) U_r^T, clamped, with w from the two moments."""
    src = rng.poisson(2.0, size=(50, 4)).astype(np.float64)
    src[:, 0] *= 4
    ref = rng.poisson(2.0, size=(60, 4)).astype(np.float64)
    ref[:, 2] *= 6
    Ms, Mr = ops.second_moment(src), ops.second_moment(ref)
    np.testing.assert_allclose(Ms, sum(np.outer(x, x) for x in src) / len(src))
    A, w = ops.eigen_transform(Ms, Mr, k=2)
    ls, Us = np.linalg.eigh(Ms)
    lr, Ur = np.linalg.eigh(Mr)
    ls, Us, lr, Ur = ls[::-1], Us[:, ::-1], lr[::-1], Ur[:, ::-1]
    Ur = Ur * np.sign(np.sum(Us * Ur, axis=0))  # the documented sign alignment
    wexp = np.ones(4)
    wexp[:2] = np.sqrt(lr[:2] / ls[:2])
    np.testing.assert_allclose(w, wexp, rtol=1e-10)
    np.testing.assert_allclose(A, Us @ np.diag(wexp) @ Ur.T, atol=1e-10)

    chunk = rng.poisson(3.0, size=(4, 5, 5)).astype(np.float32)
    m = np.zeros((5, 5), bool)
    m[1:4, 2:5] = True
    new = ops.eigen(chunk, m, None, A)
    x = chunk[:, m].astype(np.float64).T
    expect = chunk.copy()
    expect[:, m] = np.maximum(x @ A, 0).T.astype(np.float32)
    np.testing.assert_allclose(new, expect, rtol=1e-6, atol=1e-6)
    assert np.array_equal(new[:, ~m], chunk[:, ~m])
    # only some genes take the new values (IST-editing's idx), the others keep theirs
    part = ops.eigen(chunk, m, [1, 3], A)
    assert np.array_equal(part[[0, 2]], chunk[[0, 2]])
    np.testing.assert_allclose(part[[1, 3]], expect[[1, 3]], rtol=1e-6, atol=1e-6)
    # strength blends linearly
    half = ops.eigen(chunk, m, None, A, strength=0.5)
    np.testing.assert_allclose(half[:, m], 0.5 * chunk[:, m] + 0.5 * expect[:, m], rtol=1e-5, atol=1e-5)


def test_eigen_known_eigenvectors():
    """Source varies along e0 (var 4) and e1 (1); reference along e1 (9) and e0 (1).

    Moments: M_src = diag(4, 1, 0), M_ref = diag(1, 9, 0). Source eigenvectors
    (descending): e0, e1; reference: e1, e0. With k=1, coordinate 1 (along e0)
    is scaled by sqrt(9/4) = 1.5 and mapped onto the reference's top
    eigenvector e1; coordinate 2 (along e1) keeps weight 1 and maps onto e0.
    So (a, b, c) -> (b, 1.5 a, c) for a, b >= 0.
    """
    src = np.array([[2, 0, 0], [0, 1, 0], [2, 0, 0], [0, 1, 0]], dtype=float)  # E[x0^2]=2, E[x1^2]=0.5
    ref = np.array([[0, 3, 0], [1, 0, 0], [0, 3, 0], [1, 0, 0]], dtype=float)  # E[x1^2]=4.5, E[x0^2]=0.5
    Ms, Mr = ops.second_moment(src), ops.second_moment(ref)
    np.testing.assert_allclose(Ms, np.diag([2.0, 0.5, 0.0]))
    np.testing.assert_allclose(Mr, np.diag([0.5, 4.5, 0.0]))
    vals, vecs = ops.eigen_basis(Mr)
    np.testing.assert_allclose(vals, [4.5, 0.5, 0.0])
    np.testing.assert_allclose(np.abs(vecs[:, 0]), [0, 1, 0], atol=1e-12)
    A, w = ops.eigen_transform(Ms, Mr, k=1)
    np.testing.assert_allclose(w, [1.5, 1.0, 1.0])
    chunk = np.array([[[2.0]], [[1.0]], [[5.0]]], dtype=np.float32)  # one bin: (2, 1, 5)
    new = ops.eigen(chunk, np.ones((1, 1), bool), None, A)
    np.testing.assert_allclose(new[:, 0, 0], [1.0, 3.0, 5.0], atol=1e-6)
    # k=2 scales the second coordinate too: sqrt(0.5/0.5) = 1, same result
    A2, w2 = ops.eigen_transform(Ms, Mr, k=2)
    np.testing.assert_allclose(w2, [1.5, 1.0, 1.0])
    # reference == source: identity map (with aligned signs)
    A3, _ = ops.eigen_transform(Ms, Ms, k=3)
    np.testing.assert_allclose(A3, np.eye(3), atol=1e-12)


def test_eigen_clamps_at_zero():
    # a map that sends x0 to -x1 for the region's bin -> negative values clamped
    A = np.array([[0.0, -1.0], [1.0, 0.0]])
    chunk = np.array([[[3.0]], [[1.0]]], dtype=np.float32)
    new = ops.eigen(chunk, np.ones((1, 1), bool), None, A)
    np.testing.assert_allclose(new[:, 0, 0], [1.0, 0.0])


def test_mask_shape_checked(chunk):
    with pytest.raises(ValueError, match="mask shape"):
        ops.scale(chunk, np.ones((2, 2), bool), [0], 2.0)
