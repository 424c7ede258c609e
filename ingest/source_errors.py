"""The error of a source that cannot be registered, reached or read as declared (a user's to fix)."""

from catalog.errors import OrthoError


class SourceError(OrthoError, ValueError):
    pass
