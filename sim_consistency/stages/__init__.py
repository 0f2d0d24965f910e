"""Stage modules: one per script in ``scripts/``, each ``add_arguments`` / ``plan`` / ``main``.

Nothing in the package imports from here; stages sit at the end of the one-way data flow.
"""
