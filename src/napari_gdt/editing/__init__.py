"""Region masks, edit operations (pure functions), the JSON recipe and dirty-tile geometry.

No Qt or napari here: :mod:`napari_gdt.widgets.editing` is the thin panel on top.

- :mod:`.regions` - named regions (rect, polygon, labels, gene threshold) and their bin masks
- :mod:`.ops` - ``scale``, ``set_value``, ``add``, ``knockout``, ``transfer``, ``eigen``
- :mod:`.recipe` - ``load_recipe``, ``Recipe.apply``, ``apply_recipe_file``, ``dirty_bins``, ``dirty_tiles``
- :mod:`.history` - undo/redo with autosave, named gene sets
"""
