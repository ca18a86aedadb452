"""``python -m analysis ...``: the same command as ``tsp analyze ...``."""

import sys

from tsp_mlflow.cli import main

if __name__ == "__main__":
    main(["analyze", *sys.argv[1:]])
