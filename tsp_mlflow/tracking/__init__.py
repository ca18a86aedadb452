"""Everything that talks to MLflow: schema, run lifecycle, params, registry, URI resolution.

Submodules import MLflow only (never torch), so ``analysis/`` can use the schema on a laptop.
"""
