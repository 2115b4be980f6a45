"""dvstore: a Git-like, content-addressed version store for ML datasets.

The public surface; no logic lives here.
"""

from dvstore.api import Dataset, Datasets, Item, Items, Store
from dvstore.errors import (
    ConflictError,
    CorruptionError,
    CorruptObjectError,
    DvsError,
    FilterError,
    IncompatibleRecipesError,
    MergeConflictError,
    NotFoundError,
    UsageError,
)
from dvstore.filters import Filters

__all__ = [
    "ConflictError",
    "CorruptObjectError",
    "CorruptionError",
    "Dataset",
    "Datasets",
    "DvsError",
    "FilterError",
    "Filters",
    "IncompatibleRecipesError",
    "Item",
    "Items",
    "MergeConflictError",
    "NotFoundError",
    "Store",
    "UsageError",
]
