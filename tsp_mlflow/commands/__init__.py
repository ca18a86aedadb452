"""The ``tsp`` commands, one module per family; :mod:`tsp_mlflow.cli` registers them."""
