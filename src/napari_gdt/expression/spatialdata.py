"""SpatialData in and out (no Qt, no napari): read a store into a canvas, write generated images back.

Reading (:func:`read_spatialdata`)
    A SpatialData store (``.zarr``) holds either a **points** element
    (transcripts: x, y and a gene column) or a **table** annotating a
    **shapes** element (spots or bins: circles, or squares/polygons), plus an
    **image** element, the real H&E or DAPI. Each element carries coordinate
    transformations to one or more coordinate systems. The canvas affine maps
    bins to the chosen image element's pixels (intrinsic coordinates), found
    by composing the expression element's transformation to a shared
    coordinate system with the inverse of the image's. The same
    rasterisation as the vendor readers is used: transcripts are binned by
    :mod:`~napari_gdt.expression.transcripts`, spots are laid by
    :func:`~napari_gdt.expression.spots.spots_to_canvas`, so a store made from
    her2st gives the same canvas as the legacy ST reader.

Writing (:func:`write_into_spatialdata`)
    The generated image (and the edited one, and the painted regions as a
    labels element on the bin grid) are added as new elements whose
    transformations, to every coordinate system of the real image, are the
    real image's composed with ``canvas affine o (1 / px_per_bin)``: a
    generated pixel lands where the canvas affine says. The recipe, the model
    card and the settings are stored in each new element's zarr attributes
    (``napari_gdt``) and in the store's attributes. Elements already in the
    store are never changed; writing an element that exists needs
    ``overwrite=True``.

Coordinates are continuous with pixel *corners* at integers (SpatialData's
convention and the canvas affine's). Matrices here are ``(y, x, 1)``
homogeneous unless named ``_xy``.

Units: SpatialData does not record the unit of a coordinate system. Points
are taken to be in µm after their transformation (``um_per_unit`` scales
otherwise). For spots, µm per image pixel comes from ``um_per_px`` when
given, else from the table's Space Ranger scale factors
(``microns_per_pixel``, or ``spot_diameter_fullres`` with Visium's 55 µm
spots), else from a Visium HD bin name (``square_008um``: the bin edge is
8 µm), else the coordinate system is taken to be in µm.

Needs the optional ``spatialdata`` package (``pip install 'napari-gdt[spatialdata]'``).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GDTError, ReaderError

__all__ = [
    "ELEMENT_ATTR",
    "Picked",
    "generated_to_image_matrix",
    "is_spatialdata_store",
    "open_store",
    "pick_elements",
    "read_spatialdata",
    "write_into_spatialdata",
]

ELEMENT_ATTR = "napari_gdt"
DEFAULT_BIN_UM = 10.0
VISIUM_DIAMETER_UM = 55.0
_HD_NAME = re.compile(r"square_(\d{3})um")
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- store
def _require(where: str = "SpatialData"):
    try:
        import spatialdata
    except ImportError:
        raise ReaderError(
            f"{where}: reading and writing SpatialData stores needs the optional 'spatialdata' package: pip install "
            "'napari-gdt[spatialdata]'"
        ) from None
    return spatialdata


def _root_attrs(path: Path) -> dict:
    for name in ("zarr.json", ".zattrs"):
        f = path / name
        if f.is_file():
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                return {}
            return d.get("attributes", {}) if name == "zarr.json" else d
    return {}


def is_spatialdata_store(path) -> bool:
    """True for a folder whose root zarr attributes carry ``spatialdata_attrs`` (no spatialdata import needed)."""
    p = Path(path)
    return p.is_dir() and "spatialdata_attrs" in _root_attrs(p)


def open_store(path):
    """``spatialdata.read_zarr(path)``; a :class:`ReaderError` naming the store when it cannot be read."""
    p = Path(path)
    sd = _require(str(p))
    if not p.exists():
        raise ReaderError(f"{p}: no such SpatialData store")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sd.read_zarr(p)
    except Exception as e:  # noqa: BLE001 - spatialdata raises many kinds; all become one ReaderError
        raise ReaderError(
            f"{p}: not a readable SpatialData store ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def _names(d) -> str:
    return ", ".join(sorted(map(str, d.keys()))) or "none"


# --------------------------------------------------------------------------- transformations
def _to_cs(store, kind: str, name: str, element, cs: str) -> np.ndarray:
    """3x3 (y, x) matrix from the element's intrinsic coordinates to coordinate system ``cs``."""
    from spatialdata.transformations import get_transformation

    ts = get_transformation(element, get_all=True)
    if cs not in ts:
        raise ReaderError(
            f"{store}: {kind} element '{name}' has no transformation to coordinate system '{cs}' (it has: "
            f"{', '.join(ts) or 'none'})"
        )
    m = np.asarray(ts[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
    return _SWAP @ m @ _SWAP


def _inverse(store, kind: str, name: str, m: np.ndarray, cs: str) -> np.ndarray:
    a = m[:2, :2]
    det = float(np.linalg.det(a)) if np.isfinite(m).all() else float("nan")
    scale = float(np.abs(a).max()) if np.isfinite(a).all() else 0.0
    if not np.isfinite(det) or scale == 0.0 or abs(det) <= 1e-12 * scale * scale:
        raise ReaderError(
            f"{store}: {kind} element '{name}': its transformation to coordinate system '{cs}' cannot be inverted "
            f"(y,x matrix {np.round(m, 6).tolist()})"
        )
    return np.linalg.inv(m)


def _xy(m_yx: np.ndarray) -> np.ndarray:
    return _SWAP @ np.asarray(m_yx, dtype=float) @ _SWAP


def _image_array(el):
    """The full-resolution DataArray of an image/labels element (single- or multi-scale)."""
    if hasattr(el, "children") and "scale0" in getattr(el, "children", {}):
        ds = el["scale0"].ds
        return next(iter(ds.data_vars.values()))
    return el


def _image_yx(el) -> tuple[int, int]:
    a = _image_array(el)
    return int(a.sizes["y"]), int(a.sizes["x"])


def _coordinate_systems(el) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(el, get_all=True))


# --------------------------------------------------------------------------- picking
@dataclass
class Picked:
    """The elements a canvas is read from, and why."""

    store: str
    kind: str  # "points" or "table"
    points: str | None = None
    table: str | None = None
    shapes: str | None = None
    image: str | None = None
    coordinate_system: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = f"points '{self.points}'" if self.kind == "points" else f"table '{self.table}' on shapes '{self.shapes}'"
        img = f"image '{self.image}'" if self.image else "no image"
        return f"{self.store}: {what}, {img}, coordinate system '{self.coordinate_system}'"


def _table_regions(table) -> tuple[list[str], str | None, str | None]:
    attrs = dict(table.uns.get("spatialdata_attrs", {}) or {})
    region = attrs.get("region")
    regions = [region] if isinstance(region, str) else list(region or [])
    return [str(r) for r in regions], attrs.get("region_key"), attrs.get("instance_key")


def _prefer(names: list[str], hints: tuple[str, ...]) -> str:
    for h in hints:
        for n in names:
            if h in n.lower():
                return n
    return names[0]


def pick_elements(sdata, store, points=None, table=None, image=None, coordinate_system=None) -> Picked:
    """Choose the expression element, the image element and a shared coordinate system.

    Named elements must exist; otherwise: a points element if there is one
    (preferring a name with "transcripts"), else a table annotating a shapes
    element (preferring Visium HD's 8 µm bins); the largest image sharing a
    coordinate system with it; ``"global"`` or the first shared coordinate
    system. Each automatic choice is noted in ``Picked.notes``.
    """
    store = str(store)
    notes: list[str] = []
    if points is not None and table is not None:
        raise ReaderError(f"{store}: give --points or --table, not both")
    if points is not None:
        if points not in sdata.points:
            raise ReaderError(f"{store}: no points element '{points}' (points elements: {_names(sdata.points)})")
        pk = Picked(store, "points", points=points)
    elif table is not None:
        if table not in sdata.tables:
            raise ReaderError(f"{store}: no table '{table}' (tables: {_names(sdata.tables)})")
        pk = Picked(store, "table", table=table)
    else:
        pts = sorted(sdata.points.keys())
        usable_tables = [
            t for t in sorted(sdata.tables.keys()) if any(r in sdata.shapes for r in _table_regions(sdata.tables[t])[0])
        ]
        if pts:
            name = _prefer(pts, ("transcripts",))
            pk = Picked(store, "points", points=name)
            if len(pts) > 1:
                notes.append(f"picked points '{name}' of {', '.join(pts)} (--points to choose)")
        elif usable_tables:
            name = _prefer(usable_tables, ("008um", "square_008", "spots", "bins"))
            pk = Picked(store, "table", table=name)
            if len(usable_tables) > 1:
                notes.append(f"picked table '{name}' of {', '.join(usable_tables)} (--table to choose)")
        else:
            raise ReaderError(
                f"{store}: no points element and no table annotating a shapes element "
                f"(points: {_names(sdata.points)}; tables: {_names(sdata.tables)}; shapes: {_names(sdata.shapes)})"
            )
    if pk.kind == "table":
        tab = sdata.tables[pk.table]
        regions, rkey, ikey = _table_regions(tab)
        shapes = [r for r in regions if r in sdata.shapes]
        if not shapes:
            raise ReaderError(
                f"{store}: table '{pk.table}' annotates no shapes element (it annotates: {', '.join(regions) or 'nothing'}; "
                f"shapes: {_names(sdata.shapes)})"
            )
        if rkey is None or ikey is None:
            raise ReaderError(f"{store}: table '{pk.table}' lacks region_key/instance_key in uns['spatialdata_attrs']")
        pk.shapes = shapes[0]
        if len(shapes) > 1:
            notes.append(f"table '{pk.table}' annotates {', '.join(shapes)}; read the rows of '{pk.shapes}'")
        expr_el = sdata.shapes[pk.shapes]
        expr_kind, expr_name = "shapes", pk.shapes
    else:
        expr_el = sdata.points[pk.points]
        expr_kind, expr_name = "points", pk.points
    expr_cs = _coordinate_systems(expr_el)

    if image is not None:
        if image not in sdata.images:
            raise ReaderError(f"{store}: no image element '{image}' (images: {_names(sdata.images)})")
        pk.image = image
    else:
        cands = [n for n in sorted(sdata.images.keys()) if set(_coordinate_systems(sdata.images[n])) & set(expr_cs)]
        if cands:
            sizes = {n: np.prod(_image_yx(sdata.images[n])) for n in cands}
            pk.image = max(cands, key=lambda n: (sizes[n], n))
            if len(cands) > 1:
                notes.append(f"picked image '{pk.image}' (the largest of {', '.join(cands)}; --image-element to choose)")
        else:
            notes.append(
                f"no image element shares a coordinate system with {expr_kind} '{expr_name}': the canvas is placed in "
                "coordinate-system units"
            )
    shared = list(expr_cs) if pk.image is None else [c for c in expr_cs if c in _coordinate_systems(sdata.images[pk.image])]
    if coordinate_system is not None:
        if coordinate_system not in shared:
            raise ReaderError(
                f"{store}: coordinate system '{coordinate_system}' is not shared by {expr_kind} '{expr_name}'"
                + (f" and image '{pk.image}'" if pk.image else "")
                + f" (shared: {', '.join(shared) or 'none'})"
            )
        pk.coordinate_system = coordinate_system
    else:
        if not shared:
            raise ReaderError(
                f"{store}: image element '{pk.image}' shares no coordinate system with {expr_kind} '{expr_name}' "
                f"({', '.join(expr_cs)})"
            )
        pk.coordinate_system = "global" if "global" in shared else shared[0]
        if len(shared) > 1:
            notes.append(f"used coordinate system '{pk.coordinate_system}' of {', '.join(shared)}")
    pk.notes = notes
    return pk


# --------------------------------------------------------------------------- reading
class _PointsBatches:
    """Feeds a points element (dask DataFrame) to the transcript rasteriser, in µm, partition by partition."""

    def __init__(self, ddf, gene_col: str, to_um_xy: np.ndarray, label: str):
        self.ddf, self.gene_col, self.m, self.label = ddf, gene_col, to_um_xy, label
        self.columns = ["x", "y", "gene"]

    def iter_batches(self, columns, batch_rows, progress):
        import pyarrow as pa

        n = self.ddf.npartitions
        for i in range(n):
            df = self.ddf.partitions[i][["x", "y", self.gene_col]].compute()
            x = df["x"].to_numpy(dtype=np.float64)
            y = df["y"].to_numpy(dtype=np.float64)
            m = self.m
            ux = m[0, 0] * x + m[0, 1] * y + m[0, 2]
            uy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
            g = df[self.gene_col]
            if str(g.dtype) == "category":
                gene = pa.DictionaryArray.from_arrays(
                    pa.array(g.cat.codes.to_numpy(np.int32), mask=(g.cat.codes.to_numpy() < 0)),
                    pa.array([str(c) for c in g.cat.categories]),
                )
            else:
                gene = pa.array(g.astype(object).where(g.notna(), None).tolist(), type=pa.string())
            yield pa.RecordBatch.from_arrays([pa.array(ux), pa.array(uy), gene], names=["x", "y", "gene"])
            if progress:
                progress(i + 1, n)


def _scalefactors(table) -> dict:
    sp = table.uns.get("spatial", {}) if hasattr(table, "uns") else {}
    if isinstance(sp, dict) and sp:
        lib = next(iter(sp.values()))
        if isinstance(lib, dict):
            return dict(lib.get("scalefactors", {}) or {})
    return {}


def read_spatialdata(
    path,
    *,
    points: str | None = None,
    table: str | None = None,
    image_element: str | None = None,
    coordinate_system: str | None = None,
    bin_um: float | None = None,
    bin_px: float | None = None,
    um_per_px: float | None = None,
    um_per_unit: float = 1.0,
    genes=None,
    zero_fill: bool = False,
    gene_col: str | None = None,
    layer: str | None = None,
    mode: str = "footprint",
    spot_diameter_px: float | None = None,
    sigma_px: float | None = None,
    drop_prefixes=None,
    chunks=None,
    progress=None,
    sdata=None,
    **_ignored,
):
    """Read a SpatialData store (or an in-memory ``sdata`` named ``path``) into an :class:`ExpressionCanvas`.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` store (only a label when ``sdata`` is given).
    points, table, image_element, coordinate_system : str, optional
        Element names; picked automatically when not given (see
        :func:`pick_elements`). What was picked is in ``canvas.meta['spatialdata']``.
    bin_um, bin_px : float, optional
        Bin edge in µm (default 10) or in image pixels.
    um_per_px : float, optional
        µm per pixel of the image element (spots; default from the table's
        scale factors, else the coordinate system is taken as µm).
    um_per_unit : float
        µm per coordinate-system unit for points (default 1: the coordinate
        system is in µm).
    genes, zero_fill : gene panel, as :func:`~napari_gdt.expression.readers.read_any`.
    gene_col : str, optional
        Gene column of the points (default: the element's ``feature_key``).
    layer : str, optional
        Table layer holding raw counts (default ``X``).
    drop_prefixes : sequence of str, optional
        Points: genes dropped by name prefix (default: the control probes of
        Xenium, MERSCOPE and CosMx, e.g. ``NegControl``, ``Blank-``, ``NegPrb``).
    mode, spot_diameter_px, sigma_px
        Spot placement, as :func:`~napari_gdt.expression.spots.spots_to_canvas`.
    """
    store = str(path)
    if sdata is None:
        sdata = open_store(path)
    else:
        _require(store)
    for nm, v in (("--bin-um", bin_um), ("--bin-px", bin_px), ("--um-per-px", um_per_px), ("--um-per-unit", um_per_unit)):
        if v is not None and not (float(v) > 0):
            raise ReaderError(f"{store}: {nm} must be > 0, got {v}")
    pk = pick_elements(sdata, store, points=points, table=table, image=image_element, coordinate_system=coordinate_system)
    cs = pk.coordinate_system
    if pk.image is not None:
        img_el = sdata.images[pk.image]
        t_img = _to_cs(store, "image", pk.image, img_el, cs)
        cs_to_img = _inverse(store, "image", pk.image, t_img, cs)
        image_shape = _image_yx(img_el)
    else:
        cs_to_img = np.eye(3)
        image_shape = None
    info = {
        "store": store,
        "kind": pk.kind,
        "points": pk.points,
        "table": pk.table,
        "shapes": pk.shapes,
        "image": pk.image,
        "coordinate_system": cs,
        "image_to_cs": (np.linalg.inv(cs_to_img)).tolist(),
        "picked": list(pk.notes),
    }
    if pk.kind == "points":
        canvas = _read_points(
            sdata,
            pk,
            store,
            cs_to_img,
            bin_um,
            bin_px,
            um_per_px,
            um_per_unit,
            genes,
            zero_fill,
            gene_col,
            drop_prefixes,
            chunks,
            progress,
        )
    else:
        canvas = _read_table(
            sdata,
            pk,
            store,
            cs_to_img,
            image_shape,
            bin_um,
            bin_px,
            um_per_px,
            genes,
            zero_fill,
            layer,
            mode,
            spot_diameter_px,
            sigma_px,
        )
    canvas.meta["spatialdata"] = info
    canvas.meta["format"] = "spatialdata"
    if image_shape is not None:
        canvas.meta["image_shape"] = list(image_shape)
    return canvas


def _read_points(
    sdata,
    pk,
    store,
    cs_to_img,
    bin_um,
    bin_px,
    um_per_px,
    um_per_unit,
    genes,
    zero_fill,
    gene_col,
    drop_prefixes,
    chunks,
    progress,
):
    from .transcripts import read_transcripts_table

    ddf = sdata.points[pk.points]
    label = f"{store}:points/{pk.points}"
    attrs = dict(ddf.attrs.get("spatialdata_attrs", {}) or {})
    gcol = gene_col or attrs.get("feature_key")
    if gcol is None:
        raise ReaderError(f"{store}: points element '{pk.points}' has no feature_key (gene column); give --gene-col")
    for c in ("x", "y", gcol):
        if c not in ddf.columns:
            raise ReaderError(
                f"{store}: points element '{pk.points}' has no column '{c}' (columns: {', '.join(map(str, ddf.columns))})"
            )
    t_pts = _to_cs(store, "points", pk.points, ddf, pk.coordinate_system)
    u = float(um_per_unit)
    to_um_xy = _xy(np.diag([u, u, 1.0]) @ t_pts)
    um_to_img_xy = _xy(cs_to_img @ np.diag([1.0 / u, 1.0 / u, 1.0]))
    if bin_um is None:
        if bin_px is not None:
            upp = um_per_px or float(np.sqrt(abs(np.linalg.det(np.linalg.inv(cs_to_img)[:2, :2])))) * u
            bin_um = float(bin_px) * upp
        else:
            bin_um = DEFAULT_BIN_UM
    if drop_prefixes is None:
        from .transcripts import SCHEMAS

        drop_prefixes = tuple(dict.fromkeys(p for sch in SCHEMAS.values() for p in sch.drop_prefixes))
    src = _PointsBatches(ddf, gcol, to_um_xy, label)
    canvas = read_transcripts_table(
        label,
        x_col="x",
        y_col="y",
        gene_col="gene",
        units="um",
        bin_um=float(bin_um),
        genes=genes,
        zero_fill=zero_fill,
        drop_prefixes=tuple(drop_prefixes or ()),
        image_transform=um_to_img_xy if pk.image else None,
        chunks=chunks,
        progress=progress,
        _batches=src,
        _fmt="spatialdata",
    )
    canvas.meta["files"] = [store]
    canvas.meta["um_per_unit"] = u
    return canvas


def _read_table(
    sdata, pk, store, cs_to_img, image_shape, bin_um, bin_px, um_per_px, genes, zero_fill, layer, mode, spot_diameter_px, sigma_px
):
    from scipy import sparse

    from .spots import _select_genes, spots_to_canvas

    tab = sdata.tables[pk.table]
    _, rkey, ikey = _table_regions(tab)
    if rkey not in tab.obs or ikey not in tab.obs:
        raise ReaderError(f"{store}: table '{pk.table}' lacks obs column '{rkey if rkey not in tab.obs else ikey}'")
    rows = np.flatnonzero(tab.obs[rkey].astype(str).to_numpy() == pk.shapes)
    if len(rows) == 0:
        raise ReaderError(f"{store}: table '{pk.table}' has no row annotating shapes '{pk.shapes}'")
    shp = sdata.shapes[pk.shapes]
    inst = tab.obs[ikey].to_numpy()[rows]
    missing = ~np.isin(inst, shp.index.to_numpy())
    if missing.any():
        raise ReaderError(
            f"{store}: table '{pk.table}': {int(missing.sum())} instance(s) not in shapes '{pk.shapes}' (first "
            f"{inst[missing][0]!r})"
        )
    geo = shp.loc[inst]
    gtypes = set(geo.geometry.geom_type)
    if gtypes <= {"Point"}:
        if "radius" not in geo.columns:
            raise ReaderError(f"{store}: shapes '{pk.shapes}' are points without a 'radius' column")
        cx, cy = geo.geometry.x.to_numpy(float), geo.geometry.y.to_numpy(float)
        diam = 2.0 * geo["radius"].to_numpy(float)
    elif gtypes <= {"Polygon", "MultiPolygon"}:
        cen = geo.geometry.centroid
        cx, cy = cen.x.to_numpy(float), cen.y.to_numpy(float)
        diam = 2.0 * np.sqrt(geo.geometry.area.to_numpy(float) / np.pi)  # the disc of equal area
    else:
        raise ReaderError(f"{store}: shapes '{pk.shapes}' hold {', '.join(sorted(gtypes))}; expected circles or polygons")
    t_shp = _to_cs(store, "shapes", pk.shapes, shp, pk.coordinate_system)
    m = cs_to_img @ t_shp  # shapes intrinsic -> image px
    pts = m @ np.stack([cy, cx, np.ones_like(cx)])
    centres = pts[:2].T
    lin = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # image px per shapes unit
    if spot_diameter_px is None:
        spot_diameter_px = float(np.median(diam)) * lin
    sf = _scalefactors(tab)
    how = None
    if um_per_px is None:
        if "microns_per_pixel" in sf:
            um_per_px = float(sf["microns_per_pixel"]) / lin
            how = "the table's scale factor microns_per_pixel"
        elif "spot_diameter_fullres" in sf:
            um_per_px = VISIUM_DIAMETER_UM / (float(sf["spot_diameter_fullres"]) * lin)
            how = "the table's spot_diameter_fullres (55 µm Visium spots)"
        elif (hd := _HD_NAME.search(f"{pk.table} {pk.shapes}")) is not None:
            # Visium HD bins from spatialdata-io: the bin edge is bin_size µm
            edge = (
                float(np.median(np.sqrt(geo.geometry.area.to_numpy(float)))) if "Point" not in gtypes else float(np.median(diam))
            )
            um_per_px = float(hd.group(1)) / (edge * lin)
            how = f"Visium HD bins of {int(hd.group(1))} µm (element name) over their edge"
        else:
            um_per_px = float(np.sqrt(abs(np.linalg.det(np.linalg.inv(cs_to_img)[:2, :2]))))
            how = f"coordinate system '{pk.coordinate_system}' taken as µm"
    if bin_px is None:
        bin_px = float(bin_um if bin_um is not None else DEFAULT_BIN_UM) / float(um_per_px)
    if layer is not None:
        if layer not in tab.layers:
            raise ReaderError(
                f"{store}: table '{pk.table}' has no layer '{layer}' (layers: {', '.join(tab.layers.keys()) or 'none'})"
            )
        X = tab.layers[layer]
    else:
        X = tab.X
    X = X.tocsr()[rows] if sparse.issparse(X) else np.asarray(X)[rows]
    all_genes = list(map(str, tab.var_names))
    g = None if zero_fill else genes
    gi = _select_genes(all_genes, g, f"{store}:tables/{pk.table}")
    X = X[:, gi]
    canvas = spots_to_canvas(
        X,
        centres,
        [all_genes[i] for i in gi],
        bin_px=float(bin_px),
        um_per_px=float(um_per_px),
        mode=mode,
        diameter_px=spot_diameter_px,
        sigma_px=sigma_px,
        image_shape=image_shape,
        spot_ids=list(map(str, tab.obs_names[rows])),
        source=f"{store}:tables/{pk.table}",
        meta={"files": [store]},
    )
    if how:
        canvas.meta["um_per_px_from"] = how
    if genes is not None and zero_fill:
        from .transcripts import _parse_genes

        canvas = canvas.align(_parse_genes(genes), zero_fill=True, where=store)
    return canvas


# --------------------------------------------------------------------------- writing
def generated_to_image_matrix(canvas_affine, px_per_bin: float, origin_px=(0, 0)) -> np.ndarray:
    """3x3 (y, x): generated-image pixel coordinates (corners at integers) -> real-image pixel coordinates.

    A generated image rendered from output pixel ``origin_px`` (a region's
    top-left) has its pixel ``(r, c)`` at output pixel ``origin + (r, c)``,
    i.e. bin ``(origin + (r, c)) / px_per_bin``, placed by the canvas affine.
    """
    p = float(px_per_bin)
    oy, ox = (float(v) for v in origin_px)
    return np.asarray(canvas_affine, float) @ np.array([[1 / p, 0, oy / p], [0, 1 / p, ox / p], [0, 0, 1.0]])


def _affine_to(m_yx):
    from spatialdata.transformations import Affine

    return Affine(_xy(m_yx), input_axes=("x", "y"), output_axes=("x", "y"))


def _levels(shape_yx, min_px: int = 256) -> list[int]:
    n, s = 0, max(shape_yx)
    while s > min_px and n < 8:
        s //= 2
        n += 1
    return [2] * n


def _jsonable(v):
    return json.loads(json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def write_into_spatialdata(
    store,
    canvas,
    px_per_bin: float,
    generated,
    *,
    edited=None,
    regions: dict | None = None,
    origin_px=(0, 0),
    image_element: str | None = None,
    prefix: str = "gdt",
    channel_names=None,
    recipe: dict | None = None,
    model_card: dict | None = None,
    settings: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Add the generated (and edited) image and the painted regions to a SpatialData store.

    Parameters
    ----------
    store : path
        An existing SpatialData ``.zarr`` store.
    canvas : ExpressionCanvas
        The canvas the images were rendered from; its affine maps bins to the
        pixels of ``image_element``.
    px_per_bin : float
        Output pixels per bin of the model.
    generated, edited : (H, W, C) arrays
        Rendered images (uint8, or float in [0, 1]); ``edited`` optional.
    regions : dict name -> bool mask (Hb, Wb), optional
        Painted regions; written as one labels element on the bin grid
        (label ``k`` = the ``k``-th region, later regions on top).
    origin_px : (y, x)
        Output pixel of the images' top-left (a rendered region's origin).
    image_element : str, optional
        The real image the canvas is registered to (default: the one the
        canvas was read from, ``canvas.meta['spatialdata']['image']``).
    prefix : str
        Element names: ``{prefix}_generated``, ``{prefix}_edited``, ``{prefix}_regions``.
    recipe, model_card, settings : dict, optional
        Stored in the ``napari_gdt`` attributes of every new element.
    overwrite : bool
        Replace elements of the same names (never any other element).

    Returns
    -------
    dict with ``elements`` (name -> kind), ``coordinate_systems`` and ``matrix`` (generated px -> image px, y/x).
    """
    _require(str(store))
    import zarr
    from spatialdata.models import Image2DModel, Labels2DModel

    store = Path(store)
    sdata = open_store(store)
    if image_element is None:
        image_element = (canvas.meta.get("spatialdata") or {}).get("image")
        if image_element is None:
            raise GDTError(
                f"{store}: the canvas was not read from a SpatialData store; name the real image element (--image-element; "
                f"images: {_names(sdata.images)})"
            )
    if image_element not in sdata.images:
        raise GDTError(f"{store}: no image element '{image_element}' to align to (images: {_names(sdata.images)})")
    img_el = sdata.images[image_element]
    css = _coordinate_systems(img_el)
    t_img = {cs: _to_cs(store, "image", image_element, img_el, cs) for cs in css}
    g2i = generated_to_image_matrix(canvas.affine, px_per_bin, origin_px)
    b2i = np.asarray(canvas.affine, float)
    for name, m in (("generated image", g2i), ("canvas affine", b2i)):
        _inverse(store, "new", f"{prefix} {name}", m, "the real image")

    plan: list[tuple[str, str, object, np.ndarray]] = []
    plan.append((f"{prefix}_generated", "images", generated, g2i))
    if edited is not None:
        plan.append((f"{prefix}_edited", "images", edited, g2i))
    label_names = []
    if regions:
        lab = np.zeros(canvas.n_bins, dtype=np.uint16)
        for k, (n, msk) in enumerate(regions.items(), start=1):
            msk = np.asarray(msk, bool)
            if msk.shape != tuple(canvas.n_bins):
                raise GDTError(f"region '{n}': mask shape {msk.shape} is not the canvas bin grid {tuple(canvas.n_bins)}")
            lab[msk] = k
            label_names.append(n)
        plan.append((f"{prefix}_regions", "labels", lab, b2i))

    existing = {n for n in plan_names(plan) if _exists(sdata, n)}
    if existing and not overwrite:
        raise GDTError(f"{store}: element(s) {', '.join(sorted(existing))} already exist; pass --overwrite to replace them")
    # other kinds of elements with the same name would also clash
    base_attrs = {
        "kind": None,
        "px_per_bin": float(px_per_bin),
        "origin_px": [float(v) for v in origin_px],
        "aligned_to": image_element,
        "canvas_affine": b2i.tolist(),
        "genes": len(canvas.genes),
        "bin_um": float(canvas.bin_um),
        "recipe": _jsonable(recipe) if recipe is not None else None,
        "model_card": _jsonable(model_card) if model_card is not None else None,
        "settings": _jsonable(settings) if settings is not None else None,
    }
    written = {}
    for name, group, data, m in plan:
        transformations = {cs: _affine_to(t_img[cs] @ m) for cs in css}
        if group == "images":
            arr = np.asarray(data)
            if arr.ndim == 2:
                arr = arr[..., None]
            if arr.dtype != np.uint8:
                arr = np.floor(np.clip(arr.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
            arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
            cn = (
                list(channel_names)
                if channel_names is not None and len(channel_names) == arr.shape[0]
                else (["r", "g", "b"] if arr.shape[0] == 3 else [f"c{i}" for i in range(arr.shape[0])])
            )
            el = Image2DModel.parse(
                arr,
                dims=("c", "y", "x"),
                c_coords=cn,
                transformations=transformations,
                scale_factors=_levels(arr.shape[1:]) or None,
                chunks=(arr.shape[0], 1024, 1024),
            )
            kind = "edited" if name.endswith("_edited") else "generated"
        else:
            el = Labels2DModel.parse(data, dims=("y", "x"), transformations=transformations)
            kind = "regions"
        if name in existing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name in sdata:
                    del sdata[name]
                sdata.delete_element_from_disk(name)
        sdata[name] = el
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sdata.write_element(name)
        attrs = dict(base_attrs, kind=kind)
        if kind == "regions":
            attrs["labels"] = {str(k): n for k, n in enumerate(label_names, start=1)}
        zarr.open_group(str(store / group / name), mode="r+").attrs[ELEMENT_ATTR] = attrs
        written[name] = kind
    root = dict(sdata.attrs or {})
    gdt = dict(root.get(ELEMENT_ATTR, {}) or {})
    gdt.update({n: {"kind": k, "aligned_to": image_element} for n, k in written.items()})
    root[ELEMENT_ATTR] = gdt
    sdata.attrs = root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write_attrs()
        sdata.write_consolidated_metadata()
    return {"elements": written, "coordinate_systems": css, "matrix": g2i, "image_element": image_element}


def plan_names(plan) -> list[str]:
    return [p[0] for p in plan]


def _exists(sdata, name: str) -> bool:
    try:
        if name in sdata:
            return True
    except Exception:  # noqa: BLE001 - membership test on a foreign object; fall back to the paths on disk
        pass
    try:
        return any(p.endswith("/" + name) for p in sdata.elements_paths_on_disk())
    except Exception:  # noqa: BLE001 - older spatialdata or an unbacked object; treat as absent
        return False
