"""The version of the dscloud runtime, in a module of its own so that any part of the
package can name it without importing the package facade (``dscloud/__init__``)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
