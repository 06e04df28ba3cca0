"""What a build was asked to do: the options object the CLI fills and the pipeline reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuildOptions:
    hosts: tuple[str, ...] = ()  # declared host names, or "local"; none: this machine
    all_hosts: bool = False
    profiles: tuple[str, ...] = ()  # added after each host's own profiles
    sets: tuple[str, ...] = ()  # --set PATH=VALUE, applied last
    out_dir: Path | None = None
    check: bool = False
    with_staging: bool = False
    discover: bool = False  # this machine's Ollama, discovered live, as its discovered layer

    def out_root(self, root: Path) -> Path:
        """Where the outputs go: --out, else the catalog's out/."""
        return Path(self.out_dir) if self.out_dir else root / "out"
