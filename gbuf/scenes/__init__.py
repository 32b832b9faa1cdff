"""Procedural scene recipes, installed as ``gbuf.scenes``.

One recipe per module: ``DESCRIPTION`` (one line) and ``build(seed=0, frames=48)``,
which builds an animated scene into the current, empty ``bpy`` scene. Modules
whose names start with an underscore are shared helpers, not recipes.
``gbuf.render.recipes`` lists, describes and builds them; this package itself
imports nothing, so importing it never loads ``bpy``.
"""
