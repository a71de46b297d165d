"""Issue 17: hypothesis fuzzing of the readers, the recipe parser and the model-card parser.

Whatever the input, the library raises only our own errors (a :class:`GDTError` with a one-line
message naming the input) and the CLI prints one line, never a traceback. Bounded: well under
a minute on one core.
"""

from __future__ import annotations

import gzip
import json
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_gdt.errors import GDTError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# JSON-like values, biased toward the shapes of recipes and cards
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["all", "scale", "set", "add", "knockout", "transfer", "eigen", "r", "EPCAM", " ", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _one_line(e: Exception) -> None:
    msg = " ".join(str(e).split())
    assert msg, type(e)
    assert isinstance(e, GDTError), f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- recipes
EDIT_KEYS = [
    "op",
    "region",
    "genes",
    "factor",
    "value",
    "others",
    "strength",
    "coef",
    "k",
    "basis",
    "from",
    "to",
    "source",
    "reference",
]
edits = st.dictionaries(st.sampled_from(EDIT_KEYS), json_values, max_size=6)
recipes = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1", None])},
    optional={
        "regions": st.one_of(
            st.dictionaries(
                st.sampled_from(["r", "s"]),
                st.one_of(json_values, st.fixed_dictionaries({"rect": st.lists(json_values, max_size=5)})),
                max_size=2,
            ),
            json_values,
        ),
        "edits": st.one_of(st.lists(edits, max_size=3), json_values),
    },
)


@FAST
@given(recipes)
def test_recipe_parser_raises_only_our_errors(d):
    from napari_gdt.editing.recipe import Recipe

    try:
        Recipe.from_dict(d, source="fuzz.json")
    except Exception as e:  # noqa: BLE001 - the assertion is the point
        _one_line(e)


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | recipes.map(lambda d: json.dumps(d).encode()))
def test_recipe_files_raise_only_our_errors(tmp_path_factory, data):
    from napari_gdt.editing.recipe import load_recipe

    p = tmp_path_factory.mktemp("r") / "fuzz.json"
    p.write_bytes(data)
    try:
        load_recipe(p)
    except Exception as e:  # noqa: BLE001
        _one_line(e)
        assert "fuzz.json" in str(e)


# --------------------------------------------------------------------------- model cards
def _base_card():
    return {
        "format": "napari-gdt-bundle",
        "format_version": 1,
        "name": "t",
        "arch": "gdt-v1",
        "config": {
            "n_genes": 2,
            "out_channels": 3,
            "emb_ch": 8,
            "n_bin_convs": 1,
            "stage_channels": [8, 8],
            "convs_per_stage": 1,
            "latent_dim": 8,
            "log1p": True,
        },
        "genes": ["A", "B"],
        "px_per_bin": 4,
        "um_per_px": 1.0,
        "output": {"kind": "he", "channels": ["R", "G", "B"]},
        "tile_px": 32,
        "halo_px": 8,
    }


CARD_KEYS = list(_base_card())
cards = st.one_of(
    json_values,
    st.builds(lambda base, k, v: {**base, k: v}, st.just(_base_card()), st.sampled_from(CARD_KEYS), json_values),
    st.builds(
        lambda base, k, v: {**base, "config": {**base["config"], k: v}},
        st.just(_base_card()),
        st.sampled_from(list(_base_card()["config"]) + ["extra"]),
        json_values,
    ),
)


@FAST
@given(cards)
def test_card_parser_raises_only_our_errors(card):
    from napari_gdt.models.bundle import check_card

    try:
        check_card(card, "fuzz.safetensors")
    except Exception as e:  # noqa: BLE001
        _one_line(e)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(cards)
def test_bundles_with_fuzzed_cards_load_or_fail_on_one_line(tmp_path_factory, card):
    """A card that passes the schema may still not fit the tensors: still only our error."""
    from safetensors.torch import save_file

    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.models.gdt import GDTGenerator

    m = GDTGenerator(**_base_card()["config"])
    p = tmp_path_factory.mktemp("b") / "fuzz.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p), metadata={"napari_gdt": json.dumps(card)})
    try:
        load_bundle(p)
    except Exception as e:  # noqa: BLE001
        _one_line(e)


# --------------------------------------------------------------------------- readers
cells = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet='AB ,"\n\x00é-', max_size=4),
)
rows = st.lists(st.tuples(cells, cells, cells), min_size=0, max_size=6)
tables = st.builds(
    lambda header, body: (header + "\n" + "\n".join(",".join(r) for r in body)).encode(),
    st.sampled_from(["x,y,gene", "x,y", "gene,x,y", "", "x;y;gene"]),
    rows,
)


@FAST
@given(tables | st.binary(max_size=120), st.booleans(), st.sampled_from(["csv", "auto"]))
def test_transcript_reader_raises_only_our_errors(tmp_path_factory, data, gz, fmt):
    from napari_gdt.expression.readers import read_any

    d = tmp_path_factory.mktemp("t")
    p = d / ("t.csv.gz" if gz else "t.csv")
    p.write_bytes(
        gzip.compress(data)[: max(10, len(data) // 2)] if gz and data[:1] == b"x" else (gzip.compress(data) if gz else data)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_any(p, format=fmt, bin_um=10.0)
        except Exception as e:  # noqa: BLE001
            _one_line(e)


spot_rows = st.lists(
    st.tuples(
        st.integers(-3, 30),
        st.integers(-3, 30),
        st.floats(-1e6, 1e6) | st.just(float("nan")),
        st.floats(-1e6, 1e6) | st.just(float("nan")),
    ),
    max_size=5,
)


@FAST
@given(
    spot_rows,
    st.lists(st.tuples(st.text(alphabet="0123x", min_size=1, max_size=4), cells, cells), max_size=5),
    st.floats(0.001, 1e4) | st.just(float("nan")),
)
def test_st_reader_raises_only_our_errors(tmp_path_factory, spots, counts, bin_px):
    from napari_gdt.expression.readers import read_any

    d = tmp_path_factory.mktemp("st")
    s = d / "spots.tsv"
    s.write_text("x\ty\tpixel_x\tpixel_y\n" + "".join(f"{a}\t{b}\t{c}\t{e}\n" for a, b, c, e in spots))
    c = d / "counts.tsv"
    c.write_text("\tA\tB\n" + "".join(f"{i}\t{a}\t{b}\n" for i, a, b in counts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_any([c, s], format="st", bin_px=bin_px)
        except Exception as e:  # noqa: BLE001
            _one_line(e)


# --------------------------------------------------------------------------- the CLI end to end
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    tables | st.binary(max_size=80),
    st.sampled_from([[], ["--bin-um", "0.5"], ["--chunks", "1,1,1"], ["--genes", "A, ,B"], ["--fov", "1,x"]]),
)
def test_cli_convert_never_prints_a_traceback(tmp_path_factory, capsys, data, opts):
    from napari_gdt.cli import main

    d = tmp_path_factory.mktemp("cli")
    p = d / "t.csv"
    p.write_bytes(data)
    capsys.readouterr()
    rc = main(["convert", str(p), "--format", "csv", "--out", str(d / "o.ome.zarr"), *opts])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert rc in (0, 2), err
    if rc == 2:
        assert len(err.splitlines()) == 1 and ": error: " in err and "internal error" not in err
