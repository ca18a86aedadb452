"""The package version, importable from every layer without the package facade."""

__version__ = "0.1.0"
