"""``python -m analysis ...``: the same command as ``tsp analyze ...``, without torch."""

from analysis.command import main

if __name__ == "__main__":
    main()
