"""Render a canvas (and its edited twin) into a SpatialData store: the core of ``render --into-spatialdata``.

Thin: it renders with the same :class:`~napari_gdt.rendering.tiles.TileRenderer`
as every other output, and hands the images, the painted regions, the
recipe and the model card to
:func:`napari_gdt.expression.spatialdata.write_into_spatialdata`.
"""

from __future__ import annotations

__all__ = ["render_into_spatialdata"]


def render_into_spatialdata(
    store,
    bundle,
    canvas,
    *,
    region=None,
    edits=None,
    seed: int = 0,
    tile_px=None,
    device: str = "auto",
    batch_size: int = 8,
    cache=None,
    zero_fill: bool = False,
    image_element: str | None = None,
    prefix: str = "gdt",
    overwrite: bool = False,
    progress=None,
    settings: dict | None = None,
) -> dict:
    """Render ``region`` (default: the whole canvas) and add it to ``store``; with ``edits`` also the edited render
    and its regions.

    ``edits`` is a recipe file or a :class:`~napari_gdt.editing.recipe.Recipe`.
    Returns :func:`write_into_spatialdata`'s summary plus ``region``.
    """
    from ..expression.spatialdata import _require, open_store, write_into_spatialdata
    from ..rendering.tiles import TileRenderer

    _require(str(store))
    open_store(store)  # fail before rendering when the store is not one
    ppb = bundle.px_per_bin
    kw = {"seed": seed, "tile_px": tile_px, "device": device, "batch_size": batch_size, "cache": cache, "zero_fill": zero_fill}
    base = TileRenderer(bundle, canvas, **kw)
    region = base.check_region(region)
    generated = base.render_region(region, progress=progress)
    edited = regions = recipe_dict = None
    if edits is not None:
        from ..editing.recipe import Recipe, load_recipe

        recipe = edits if isinstance(edits, Recipe) else load_recipe(edits)
        edited_canvas = recipe.apply(canvas, px_per_bin=ppb)
        edited = TileRenderer(bundle, edited_canvas, **kw).render_region(region, progress=progress)
        regions = recipe.masks(canvas, ppb)
        recipe_dict = recipe.to_dict()
    names = bundle.card.get("output", {}).get("channels")
    s = dict(settings or {})
    s.update(
        {
            "seed": int(seed),
            "region": [region.y0, region.y1, region.x0, region.x1],
            "tile_px": tile_px or bundle.card.get("tile_px"),
        }
    )
    out = write_into_spatialdata(
        store,
        canvas,
        ppb,
        generated,
        edited=edited,
        regions=regions,
        origin_px=(region.y0, region.x0),
        image_element=image_element,
        prefix=prefix,
        channel_names=names,
        recipe=recipe_dict,
        model_card=dict(bundle.card),
        settings=s,
        overwrite=overwrite,
    )
    out["region"] = region
    return out
