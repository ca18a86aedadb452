"""Statistics over tsp-mlflow runs, straight from the tracking server.

This package never imports torch: it runs on a laptop against a remote server.
"""
