"""Diagnostics and the exception tree every stage raises.

    HostfitError                    anything hostfit reports instead of a traceback
    ├── InputError                  the catalog is at fault: exit status 1
    │   ├── LoadError               a file cannot be read as YAML/JSON (syntax, duplicate key, tag, bomb)
    │   └── VersionError            schema_version missing, not an integer, or newer than this compiler
    ├── UsageError                  the command line is at fault: exit status 2
    └── RuntimeFailure              the machine is at fault (disk, network): exit status 3
        ├── DownloadError           every mirror failed, after retries
        ├── IntegrityError          the bytes arrived but are not the pinned ones (size, sha256)
        └── DiskError               not enough free space, or the cache cannot be written

An InputError carries every Diagnostic found, not just the first, so a user fixes a file in
one pass. Schema and semantic problems are not raised: validate returns them as data, so one
bad file never stops the checks of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem at one place in one source file (line and col are 1-based; 0 when unknown)."""

    path: str
    line: int
    col: int
    code: str
    message: str
    hint: str | None = field(default=None, compare=False)
    severity: str = field(default="error", compare=False)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}:{self.col}" if self.line else self.path

    def to_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "col": self.col, "severity": self.severity,
                "code": self.code, "message": self.message, "hint": self.hint}


class HostfitError(Exception):
    exit_status = EXIT_RUNTIME


class InputError(HostfitError):
    """Bad input; carries the diagnostics, sorted into source order."""

    exit_status = EXIT_INVALID

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(f"{d.where}: {d.message}" for d in self.diagnostics))


class LoadError(InputError):
    pass


class VersionError(InputError):
    pass


class UsageError(HostfitError):
    exit_status = EXIT_USAGE


class RuntimeFailure(HostfitError):
    exit_status = EXIT_RUNTIME


class DownloadError(RuntimeFailure):
    pass


class IntegrityError(RuntimeFailure):
    pass


class DiskError(RuntimeFailure):
    pass


def did_you_mean(word: str, choices, cutoff: float = 0.6) -> str | None:
    """A hint naming the closest known choice, compared case-insensitively."""
    import difflib

    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=cutoff)
    return f"did you mean {by_lower[close[0]]!r}?" if close else None
