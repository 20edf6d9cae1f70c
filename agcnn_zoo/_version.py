"""The package version, in a module of its own: read by setuptools (pyproject.toml) and by the
modules that stamp it (downloads' User-Agent, training records) without importing the package."""
__version__ = "0.1.0"
