"""The dvstore error tree.

This module owns every exception dvstore raises on purpose and the exit code each one maps
to on the command line. It imports nothing from dvstore, so every other module can import it.

    DvsError (exit 2 unless a subclass says otherwise)
     +-- UsageError            bad arguments or invalid input (exit 2)
     |    +-- FilterError       a malformed DQL query
     |    +-- RecipeError       a malformed recipe file
     |    +-- InvalidNameError  a hostile or malformed item/dataset name  (also ValueError)
     |    +-- ImportFormatError a malformed annotation file (COCO, Dataloop JSON)
     +-- NotFoundError         store, dataset, revision, item (exit 3)  (also KeyError)
     +-- IncompatibleRecipesError (exit 4)
     +-- ConflictError         the head moved under this operation (exit 5)
     |    +-- LockedError       another process holds a lock past the wait timeout
     +-- MergeConflictError    a merge found conflicts (exit 1); carries them as data
     +-- CorruptionError       the store is damaged or unreadable (exit 6)
     |    +-- CorruptObjectError  bytes do not hash to their id, or fail schema checks
     +-- StorageError          a write failed: disk full, I/O error (exit 6)
     +-- FormatVersionError    the store was written by a newer dvstore (exit 6)

Each class carries an optional ``hint``: one line telling the user what to do next.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_DIFFERENCES = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INCOMPATIBLE = 4
EXIT_CONFLICT = 5
EXIT_DAMAGED = 6
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class DvsError(Exception):
    """Base of every error dvstore raises on purpose."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(DvsError):
    """Bad arguments or invalid input."""


class FilterError(UsageError):
    """A malformed DQL query document."""


class RecipeError(UsageError):
    """A malformed recipe or ontology file."""


class InvalidNameError(UsageError, ValueError):
    """A name that is hostile, malformed or not canonical."""


class ImportFormatError(UsageError):
    """A malformed annotation or metadata file."""


class NotFoundError(DvsError, KeyError):
    """A store, dataset, revision, item or object that does not exist."""

    exit_code = EXIT_NOT_FOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class IncompatibleRecipesError(DvsError):
    """Two datasets whose recipes cannot be merged."""

    exit_code = EXIT_INCOMPATIBLE


class ConflictError(DvsError):
    """Another writer moved the head this operation started from."""

    exit_code = EXIT_CONFLICT


class LockedError(ConflictError):
    """A lock is held by another live process past the wait timeout."""


class MergeConflictError(DvsError):
    """A merge found conflicts; nothing was written. ``conflicts`` holds them as data."""

    exit_code = EXIT_DIFFERENCES

    def __init__(self, message: str, conflicts: list[Any], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.conflicts = conflicts


class CorruptionError(DvsError):
    """The store is damaged or unreadable."""

    exit_code = EXIT_DAMAGED


class CorruptObjectError(CorruptionError):
    """Stored bytes that do not hash to their id or do not fit their schema."""


class StorageError(DvsError):
    """A write to the store failed (disk full, I/O error); the old state is intact."""

    exit_code = EXIT_DAMAGED


class FormatVersionError(DvsError):
    """The store was written by a newer dvstore than this one."""

    exit_code = EXIT_DAMAGED
