"""Errors the kernel raises. Each names where the problem is, so callers can report it precisely."""

from __future__ import annotations


class LicetError(Exception):
    """Base class of every error the kernel raises on purpose."""


class PolicyError(LicetError):
    """A policy document is invalid; carries file, line, column (1-based) and the dotted field."""

    def __init__(
        self, message: str, *, file: str = "<policy>", line: int = 0, column: int = 0, field: str = ""
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        """`FILE:LINE:COL: field: message`, the form editors and CI logs understand."""
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class InvalidRequest(LicetError):
    """A request cannot be decided (malformed field, traversal above the root); never a permit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class KernelFault(LicetError):
    """The solver could not establish a verdict (unknown, inconsistent facts); callers fail closed."""
