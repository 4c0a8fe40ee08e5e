"""gpscat: survey source-catalog pipeline for IACT data (GADF DL3 → released catalog)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
