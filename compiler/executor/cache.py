"""The artifact cache: `$XDG_CACHE_HOME/hostfit/models` (or `HOSTFIT_CACHE`) and its manifest.

    <cache>/.hostfit-cache                 the marker: hostfit made this folder and may delete in it
    <cache>/manifest.json                  id, path, size, sha256, downloaded_at, last_used, use_count
                                           (a file set: files, each name, size, sha256); seen: each
                                           file's [size, mtime_ns, inode] when it was last hashed
    <cache>/<model id, escaped>/<file>     verified artifacts; a file set's files side by side under their
                                           own names (llama.cpp finds a split GGUF's shards beside the first)
    <cache>/.downloading/<key>.part        partial downloads (resumed across runs)
    <cache>/.downloading/<key>.part.ranges what a ranged partial holds (download.py)

The cache owns only what it created. A missing or empty folder becomes a cache (marker and an empty
manifest); a folder that holds anything else and no marker is refused by every command (E220, exit
2: the configuration names the wrong folder, and nothing on the machine is broken), so pointing
HOSTFIT_CACHE at $HOME by mistake deletes nothing. A location that cannot be a cache at all (a
file, a read-only folder) is a disk fault (E221, exit 3), like a full disk; so is a link inside the
cache that leads out of it (E222).

The manifest is rewritten atomically under a file lock. Every entry must name the file of its own
model inside the cache (`<escaped id>/<file>`, resolved, symlinks included); a missing, corrupt or
stray one is rebuilt, with a warning, from the files in the cache's own layout only. Every deletion
goes through Cache.delete, which refuses anything but a regular file below the root of a marked cache.

Every use of a cached file (fetch, apply, bundle, load) compares its size, mtime_ns and inode with
`seen` and hashes it again when any differs (Cache.unchanged): a same-size rewrite that keeps the
mtime is the one change this misses, which `--verify` (always hash) and `cache verify` catch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..artifacts import set_digest
from ..errors import DiskError, UsageError
from ..validate import file_name_problem

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:/-]*$")
STALE_PART_SECONDS = 24 * 3600
MARKER = ".hostfit-cache"
MARKER_TEXT = ("hostfit-cache 1\n"
               "This folder is hostfit's artifact cache: hostfit writes and deletes files only in a folder\n"
               "holding this file. Delete the whole folder to drop the cache.\n")
# the files a model artifact is (GGUF, safetensors, PyTorch, ONNX, MLX's weights): a manifest rebuild
# takes over nothing else
ARTIFACT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".npz")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
STAMP_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


class ForeignFolder(UsageError):
    """The configured cache folder holds files hostfit did not put there (E220, exit 2)."""


class LinkOut(DiskError):
    """A path in the cache leads outside it through a symbolic link (E222, exit 3)."""


class UnsafeName(ValueError):
    """A name that would put a file outside its place in the cache."""


def sidecar_path(part: Path) -> Path:
    """The sidecar of a ranged partial download: the bytes written in each of its parts (download.py)."""
    return part.with_name(part.name + ".ranges")


def unsafe(what: str, name: str, why: str) -> UnsafeName:
    return UnsafeName(f"refusing {what} {name!r}: {why}")


def escape_id(model_id: str) -> str:
    """A model id as one folder name: `/` and `:` escaped, so distinct ids stay distinct."""
    if not isinstance(model_id, str) or not ID_PATTERN.match(model_id) or ".." in model_id.split("/"):
        raise unsafe("model id", str(model_id), "not a valid model id")
    return model_id.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def unescape_id(folder: str) -> str | None:
    """The model id a cache folder holds, or None for a name escape_id cannot have made."""
    model_id = folder.replace("%2F", "/").replace("%3A", ":").replace("%25", "%")
    try:
        return model_id if escape_id(model_id) == folder else None
    except UnsafeName:
        return None


def check_file_name(name: str) -> str:
    problem = file_name_problem(name) if isinstance(name, str) and name and "\0" not in name else "is empty"
    if problem or name.startswith("/") or name in (".", ".."):
        raise unsafe("artifact file", str(name), f"it {problem or 'is not a plain name'}")
    return name


def now() -> str:
    return datetime.now(timezone.utc).strftime(STAMP)


@dataclass
class Entry:
    """One model's artifact. A file set is one entry, so it is listed, verified, pinned and evicted whole:
    `path` names its first file, `size` the sum, `sha256` the set's digest (artifacts.set_digest)."""
    id: str
    path: str  # relative to the cache root
    size: int
    sha256: str
    downloaded_at: str
    last_used: str
    use_count: int = 0
    files: list | None = None  # a file set: [{name, size, sha256}] in order; None for one file
    seen: dict | None = None  # {file name: [size, mtime_ns, inode]} when last hashed; None: hash before use

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        for key in ("files", "seen"):  # manifests of single files stay as they were
            if out[key] is None:
                del out[key]
        return out

    def file_list(self) -> list[dict]:
        """Each file as {name, path, size, sha256} (path relative to the cache root)."""
        folder = self.path.rpartition("/")[0]
        if self.files is None:
            return [{"name": self.path.rpartition("/")[2], "path": self.path, "size": self.size, "sha256": self.sha256}]
        return [{**item, "path": f"{folder}/{item['name']}"} for item in self.files]


class Cache:
    """The cache at `root` (default: paths.artifact_cache()). `create`: make a missing or empty folder a
    cache now (fetch, apply); without it such a folder reads as an empty cache and nothing is written."""

    def __init__(self, root: Path | None = None, create: bool = True):
        self.root = Path(os.path.abspath(root or paths.artifact_cache()))
        self.warnings: list[str] = []
        self.marked = self._claim(create)

    # ---------------------------------------------------------------------------- ownership

    def _claim(self, create: bool) -> bool:
        """True once the root is a marked cache; False for a missing or empty folder left as it is."""
        try:
            if self.root.is_dir():
                self.root = self.root.resolve()
                if (self.root / MARKER).is_file():
                    return True
                # the marker is written before anything else, so a folder another process is
                # initialising right now shows it by the time its other files appear
                if any(self.root.iterdir()) and not (self.root / MARKER).is_file():
                    raise self._foreign()
            elif self.root.exists() or self.root.is_symlink():
                raise self._unusable("it is not a folder")
            if not create:
                return False
            self.root.mkdir(parents=True, exist_ok=True)
            self.root = self.root.resolve()
            try:  # O_EXCL: two processes initialising one folder both end with the marker written once
                fd = os.open(self.root / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return True
            with os.fdopen(fd, "w") as handle:
                handle.write(MARKER_TEXT)
        except OSError as exc:
            raise self._unusable(exc.strerror or str(exc)) from exc
        self.marked = True
        self.entries()  # writes an empty manifest: the first fetch finds one, not a "missing" one
        return True

    def _override_hint(self) -> str:
        if paths.env(paths.HOSTFIT_CACHE):
            return f"point {paths.HOSTFIT_CACHE} at a new or empty folder, or unset it"
        return f"set {paths.HOSTFIT_CACHE} to a new or empty folder"

    def _foreign(self) -> ForeignFolder:
        # never advise marking the folder: a marker makes hostfit own whatever is there, and in a folder
        # like $HOME the user's own files would then be the cache's to list and delete
        legacy = (self.root / "manifest.json").is_file()
        return ForeignFolder(
            f"E220 {self.root} is not a hostfit cache: it holds files and no {MARKER} marker, so hostfit "
            f"will neither write nor delete anything there; {self._override_hint()}"
            + (" (if an older hostfit made this cache, use a new, empty folder and fetch again; do not mark "
               "a folder that holds anything but hostfit's artifacts)" if legacy else ""))

    def _unusable(self, why: str) -> DiskError:
        return DiskError(f"E221 {self.root} cannot be the artifact cache: {why}; make it a writable folder, "
                         f"or {self._override_hint()}")

    # ------------------------------------------------------------------------------ paths

    def inside(self, path: Path) -> Path:
        """`path` resolved (links followed), which must lie below the root."""
        resolved = path.resolve()
        if not self._below(resolved):
            raise LinkOut(f"E222 {path} leads outside the artifact cache {self.root} (to {resolved}); "
                          f"hostfit reads and writes only inside it: remove the link")
        return resolved

    def _below(self, resolved: Path) -> bool:
        return self.root in resolved.parents

    def artifact_path(self, model_id: str, file: str) -> Path:
        return self.inside(self.root / escape_id(model_id) / check_file_name(file))

    def part_path(self, model_id: str, file: str) -> Path:
        return self.inside(self.root / ".downloading" / f"{escape_id(model_id)}%2F{check_file_name(file)}.part")

    @contextmanager
    def lock_for(self, path: Path):
        from filelock import FileLock

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(lock_file(path), timeout=3600)
            lock.acquire()
        except OSError as exc:  # a read-only cache, or a lock held for an hour (filelock.Timeout)
            raise DiskError(f"cannot lock {path} in the artifact cache: {exc.strerror or exc}") from exc
        try:
            yield lock
        finally:
            lock.release()

    def delete(self, path: Path) -> bool:
        """The one way the cache deletes: a regular file (no folder, no link) below the root of a marked
        cache. Anything else is refused with a warning. True if a file was deleted."""
        folder = path.parent.resolve()
        target = folder / path.name
        why = ("the cache folder is not marked as hostfit's" if not self.marked
               else "it is outside the cache" if folder != self.root and not self._below(folder)
               else "it is the cache's marker" if target == self.root / MARKER else None)
        try:
            if why is None and not stat.S_ISREG(target.lstat().st_mode):
                why = "it is not a regular file"
        except FileNotFoundError:
            return False
        if why:
            self.warnings.append(f"refused to delete {path}: {why}")
            return False
        target.unlink(missing_ok=True)
        return True

    # --------------------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def _read(self) -> tuple[dict[str, Entry] | None, str]:
        """(the manifest's entries, "") or (None, why not): missing, unreadable, or an entry that is not
        one of this cache's artifacts (a path outside it, a file of another model)."""
        try:
            with open_artifact(self.manifest_path) as handle:  # a FIFO planted here would block a plain read
                raw = json.loads(handle.read())
            entries = {key: Entry(**value) for key, value in raw["artifacts"].items()}
        except FileNotFoundError:
            return None, "missing"
        except NotRegular:
            return None, "not a regular file"
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: nested too deep
            return None, "unreadable"
        except OSError as exc:
            raise self._unusable(exc.strerror or str(exc)) from exc
        for key, entry in entries.items():
            problem = self._entry_problem(key, entry)
            if problem:
                return None, f"unusable (its entry {key!r} {problem})"
        return entries, ""

    def _entry_problem(self, key: str, entry: Entry) -> str | None:
        """Why a manifest entry is not an artifact of this cache (None if it is)."""
        if entry.id != key or not isinstance(entry.path, str):
            return "does not match its id"
        try:
            expected = f"{escape_id(entry.id)}/{check_file_name(entry.path.rpartition('/')[2])}"
            if entry.path != expected:
                return f"names {entry.path!r}, not {expected!r}"
        except UnsafeName as exc:
            return str(exc)
        # the root is resolved and the path is two plain names, so it can only leave the root through
        # a link; hostfit makes none (two lstat calls, not a resolve: a 1,000-entry manifest reads in ms)
        folder = os.path.join(self.root, entry.path.partition("/")[0])
        if os.path.islink(folder) or os.path.islink(os.path.join(self.root, entry.path)):
            return f"points outside the cache ({entry.path!r} is reached through a link)"
        if not (isinstance(entry.size, int) and not isinstance(entry.size, bool) and entry.size >= 0
                and isinstance(entry.sha256, str) and isinstance(entry.use_count, int)):
            return "has a wrong size, sha256 or use count"
        if entry.seen is not None and not (isinstance(entry.seen, dict) and all(
                isinstance(key, str) and isinstance(value, list) and len(value) == 3
                and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
                for key, value in entry.seen.items())):
            return "has a wrong `seen` record"
        if entry.files is not None:
            problem = self._set_problem(entry)
            if problem:
                return problem
        if not all(isinstance(stamp, str) and STAMP_PATTERN.fullmatch(stamp) and parse_stamp(stamp)
                   for stamp in (entry.last_used, entry.downloaded_at)):
            return "has a wrong time stamp"
        return None

    def _set_problem(self, entry: Entry) -> str | None:
        """Why a file set's `files` is not a set of this cache's files in the entry's folder (None if it is)."""
        files = entry.files
        if not (isinstance(files, list) and len(files) > 1 and all(
                isinstance(item, dict) and set(item) == {"name", "size", "sha256"} and isinstance(item["name"], str)
                and isinstance(item["size"], int) and not isinstance(item["size"], bool) and item["size"] >= 0
                and isinstance(item["sha256"], str) for item in files)):
            return "has a wrong list of files"
        names = [item["name"] for item in files]
        try:
            for name in names:
                check_file_name(name)
        except UnsafeName as exc:
            return str(exc)
        if len(set(names)) != len(names) or entry.path.rpartition("/")[2] != names[0]:
            return "does not name its files once each, the first as its path"
        if any(os.path.islink(os.path.join(self.root, item["path"])) for item in entry.file_list()):
            return "points outside the cache (a file of the set is reached through a link)"
        if entry.size != sum(item["size"] for item in files) \
                or entry.sha256 != set_digest([(item["name"], item["size"], item["sha256"]) for item in files]):
            return "has a size or digest that is not its files'"
        return None

    def entries(self) -> dict[str, Entry]:
        if not self.marked:
            return {}
        entries, _ = self._read()
        if entries is None:
            with self.lock_for(self.manifest_path):
                entries, why = self._read()
                if entries is None:
                    entries = self._rebuild(why)
        return entries

    def _rebuild(self, why: str) -> dict[str, Entry]:
        """The manifest from the files in the cache's own layout (hashing each): for a missing or bad one.
        Only `<escaped model id>/<file>` regular files count; whatever else is there is left alone."""
        try:
            entries = self._own_files()
        except OSError as exc:
            raise self._unusable(exc.strerror or str(exc)) from exc
        if why != "missing" or entries:  # a new cache has no manifest yet, and nothing to warn about
            self.warnings.append(f"{self.manifest_path} was {why}; rebuilt it from the {len(entries)} cached file(s)")
        self._write(entries)
        return entries

    def _own_files(self) -> dict[str, Entry]:
        """The artifacts a rebuild may take over: only hostfit's exact layout, a folder named by an escaped
        model id holding regular files with a model artifact's extension and nothing else (several only
        when they are one complete split set, in name order, which is its shard order). A folder holding anything more (another
        file, a sub-folder, a link) is not one hostfit made, and is left alone: what a rebuilt manifest
        lists, clean and prune may delete."""
        entries: dict[str, Entry] = {}
        for folder in sorted(self.root.iterdir()):
            model_id = unescape_id(folder.name)
            if model_id is None or folder.is_symlink() or not folder.is_dir():
                continue
            inside = sorted(folder.iterdir())
            if not inside or not all(file.name.lower().endswith(ARTIFACT_SUFFIXES) and regular(file)
                                     for file in inside):
                continue
            try:
                for file in inside:
                    check_file_name(file.name)
            except UnsafeName:
                continue
            if len(inside) > 1 and not one_split_set([file.name for file in inside]):
                continue  # several files but not one set (an older file beside a newer one): not provably one artifact
            files = [{"name": file.name, "size": file.stat().st_size, "sha256": sha256_file(file)} for file in inside]
            stamp = datetime.fromtimestamp(max(file.stat().st_mtime for file in inside), timezone.utc).strftime(STAMP)
            entries[model_id] = Entry(model_id, f"{folder.name}/{inside[0].name}", sum(f["size"] for f in files),
                                      set_digest([(f["name"], f["size"], f["sha256"]) for f in files]), stamp, stamp,
                                      0, files if len(files) > 1 else None,
                                      {file.name: file_stat(file) for file in inside})
        return entries

    def _write(self, entries: dict[str, Entry]) -> None:
        from ..emit import write_atomic

        body = {"manifest_version": 1, "artifacts": {k: entries[k].to_dict() for k in sorted(entries)}}
        try:
            write_atomic(self.manifest_path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
        except Exception as exc:  # write_atomic raises RuntimeFailure; the cache is a disk concern
            raise DiskError(str(exc)) from exc

    def update(self, change) -> dict[str, Entry]:
        """Apply `change(entries)` to the manifest under its lock, then write it atomically."""
        if not self.marked:
            self.marked = self._claim(create=True)
        with self.lock_for(self.manifest_path):
            entries, why = self._read()
            if entries is None:
                entries = self._rebuild(why)
            change(entries)
            self._write(entries)
            return entries

    def record(self, model_id: str, files: list[tuple[Path, int, str]], downloaded: bool) -> None:
        """Record a model's verified files, (path, size, sha256) each, all in its folder: one entry."""
        names = [(path.name, size, sha) for path, size, sha in files]
        listed = [{"name": name, "size": size, "sha256": sha} for name, size, sha in names] if len(files) > 1 else None
        seen = {path.name: file_stat(path) for path, _, _ in files}

        def change(entries):
            old = entries.get(model_id)
            stamp = now()
            entries[model_id] = Entry(model_id, str(files[0][0].relative_to(self.root)),
                                      sum(size for _, size, _ in names), set_digest(names),
                                      stamp if downloaded or old is None else old.downloaded_at, stamp,
                                      (old.use_count if old else 0) + 1, listed,
                                      None if None in seen.values() else seen)
        self.update(change)

    def unchanged(self, entry: Entry, name: str) -> bool:
        """True when a file of `entry` has the size, mtime_ns and inode it had when last hashed, so its
        recorded sha256 still vouches for it; anything else (or no record) means hash it again."""
        recorded = (entry.seen or {}).get(name)
        item = next((item for item in entry.file_list() if item["name"] == name), None)
        return (recorded is not None and item is not None and recorded[0] == item["size"]
                and file_stat(self.root / item["path"]) == recorded)

    def forget(self, model_id: str) -> None:
        """Drop a model's entry and keep its files: before any of them is replaced, so the manifest never
        vouches for bytes it did not verify (a fetch that fails or is killed midway leaves files that the
        next one hashes again)."""
        if self.marked and model_id in self.entries():
            self.update(lambda entries: entries.pop(model_id, None))

    def evict(self, seen: Entry) -> bool:
        """Remove an artifact as `seen` when listed, unless it is in use: a fetch of it holds its lock
        (skipped, not waited for), or it was fetched or used since (its manifest entry changed). Keeps
        prune from deleting what a concurrent fetch has just verified or is about to record."""
        from filelock import FileLock, Timeout

        lock = FileLock(lock_file(self.part_path(seen.id, seen.path.rpartition("/")[2])), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return False
        except OSError as exc:
            raise DiskError(f"cannot lock {seen.id} in the artifact cache: {exc.strerror or exc}") from exc
        removed = []
        try:
            def change(entries):
                entry = entries.get(seen.id)
                if entry is not None and (entry.sha256, entry.last_used, entry.use_count) == \
                        (seen.sha256, seen.last_used, seen.use_count):  # use_count: a use in the same second
                    del entries[seen.id]
                    for item in entry.file_list():
                        self.delete(self.root / item["path"])
                    removed.append(entry)
            self.update(change)
        finally:
            lock.release()
        return bool(removed)

    # ------------------------------------------------------------------------ maintenance

    def parts(self) -> list[Path]:
        """Partial downloads, resumable by the next fetch."""
        folder = self.root / ".downloading"
        return sorted(folder.glob("*.part")) if self.marked and folder.is_dir() else []

    def delete_part(self, part: Path) -> bool:
        """A partial download and the sidecar of a ranged one (`<key>.part.ranges`, download.py), which
        says how much of the part is written and means nothing without it. True if the part was deleted."""
        deleted = self.delete(part)  # first: a ranged partial left without its sidecar would pass for a prefix
        self.delete(sidecar_path(part))
        return deleted

    def stale_parts(self, older_than: float = STALE_PART_SECONDS) -> list[Path]:
        limit = time.time() - older_than
        return [p for p in self.parts() if p.lstat().st_mtime < limit]

    def remove(self, model_id: str) -> bool:
        """Forget an artifact and delete its files (every file of a set); False if the cache does not hold it."""
        if not self.marked:
            return False
        removed = []

        def change(entries):
            entry = entries.pop(model_id, None)
            if entry is not None:
                for item in entry.file_list():
                    self.delete(self.root / item["path"])
                removed.append(entry)
        self.update(change)
        return bool(removed)


SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<n>[0-9]{5})-of-(?P<m>[0-9]{5})(?P<ext>\.[A-Za-z0-9]+)$")


def one_split_set(names: list[str]) -> bool:
    """The names are one complete split set, `<stem>-0000N-of-0000M.<ext>` for N = 1..M (llama.cpp's and
    Hugging Face's shard names): the only several files a manifest rebuild takes as one artifact."""
    found = [SPLIT_NAME.match(name) for name in names]
    if not all(found) or len({(m["stem"], m["m"], m["ext"]) for m in found}) != 1:
        return False
    return sorted(int(m["n"]) for m in found) == list(range(1, len(names) + 1)) == list(
        range(1, int(found[0]["m"]) + 1))


class NotRegular(DiskError):
    """A cache entry that is not a regular file (a FIFO, a device, a folder, a link): never opened, since
    opening a FIFO blocks forever; it counts as not cached."""


LOCK_SUFFIX = ".lock"


def lock_file(path: Path) -> str:
    """The lock file Cache.lock_for takes for `path`: evict and clear test the same one a fetch holds."""
    return str(path) + LOCK_SUFFIX


def file_stat(path: Path) -> list[int] | None:
    """[size, mtime_ns, inode] of a regular file (lstat: a link is not one); None for anything else."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ino] if stat.S_ISREG(found.st_mode) else None


def regular(path: Path) -> bool:
    """True for a regular file (lstat: a link is not one); False for anything else or nothing."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_artifact(path: Path, mode: str = "rb"):
    """`path` opened for reading ("rb") or writing ("wb", "r+b") only if it is a regular file or, for
    "wb", absent: lstat first, then O_NOFOLLOW | O_NONBLOCK (so a FIFO swapped in after the lstat
    cannot block the open) and fstat to be sure. Anything else raises NotRegular."""
    try:
        kind = stat.S_IFMT(os.lstat(path).st_mode)
    except FileNotFoundError:
        if mode != "wb":
            raise
        kind = stat.S_IFREG
    if kind != stat.S_IFREG:
        raise NotRegular(f"{path} is not a regular file ({_KINDS.get(kind, 'a special file')}): "
                         "hostfit does not open it; remove it")
    flags = {"rb": os.O_RDONLY, "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "r+b": os.O_RDWR}[mode]
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(f"{path} is not a regular file: hostfit does not read it; remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a folder",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open_artifact(path) as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def parse_size(text: str) -> int:
    """'20G', '500MB', '1.5GiB', '1024' -> bytes (binary units: 1G = 1024^3)."""
    import re as _re

    match = _re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (try 20G or 500M)")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def parse_age(text: str) -> float:
    """'30d', '12h', '90m' -> seconds."""
    import re as _re

    match = _re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms])\s*", text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 30d or 12h)")
    return float(match.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[match.group(2)]


def parse_stamp(stamp: str) -> datetime | None:
    """A manifest time stamp (STAMP), or None for an impossible date such as month 13."""
    try:
        return datetime.fromisoformat(stamp)  # Python 3.11 reads the trailing Z; far faster than strptime
    except ValueError:
        return None


def age_seconds(stamp: str) -> float:
    return (datetime.now(timezone.utc) - parse_stamp(stamp)).total_seconds()


def clean(store: Cache, older_than: float, pins: set[tuple[str, str]]) -> tuple[list[str], int]:
    """Remove artifacts unused for `older_than` seconds (never a pinned one, nor one a concurrent fetch holds
    or has used since this listing) and stale partials."""
    old = [e for e in store.entries().values()
           if age_seconds(e.last_used) > older_than and (e.id, e.sha256) not in pins]
    removed = [entry.id for entry in old if store.evict(entry)]  # not one a fetch holds or used since listed
    return removed, sum(store.delete_part(part) for part in store.stale_parts())


def prune(store: Cache, limit: int, pins: set[tuple[str, str]]) -> tuple[list[str], int]:
    """Evict least recently used artifacts (by `last_used`, which every use updates; ties by id) until the
    cache fits `limit` bytes; pins stay, and so does an artifact a concurrent fetch holds or has used since
    this listing. Returns the evicted ids and the size left. Stale partials go too."""
    entries = store.entries()
    total = sum(e.size for e in entries.values())
    evicted = []
    for entry in sorted(entries.values(), key=lambda e: (e.last_used, e.id)):
        if total <= limit:
            break
        if (entry.id, entry.sha256) in pins or not store.evict(entry):
            continue
        total -= entry.size
        evicted.append(entry.id)
    for part in store.stale_parts():
        store.delete_part(part)
    return evicted, total


class CacheFull(DiskError):
    """The artifacts locks pin need more than cache.max_size (E721, exit 3)."""


def enforce_limit(store: Cache, limit: int, pins: set[tuple[str, str]], config: Path) -> list[str]:
    """cache.max_size after a fetch: prune() to `limit`, then CacheFull when what is pinned alone exceeds it."""
    evicted, _ = prune(store, limit, pins)
    entries = store.entries()
    pinned = sum(e.size for e in entries.values() if (e.id, e.sha256) in pins)
    if pinned > limit:
        raise CacheFull(
            f"E721 cache full: the {sum((e.id, e.sha256) in pins for e in entries.values())} artifact(s) locks pin "
            f"need {pinned / 2**30:,.2f} GiB, over cache.max_size {limit / 2**30:,.2f} GiB ({config}); nothing "
            "pinned is evicted: raise cache.max_size, or drop models from the hosts' locks (out/*/models.lock)")
    return evicted


def clear(store: Cache) -> tuple[list[str], int]:
    """Every artifact and partial download removed, through Cache.evict and Cache.delete; what a running
    fetch holds (its artifact, and then every partial: a set's partials share its first file's lock)
    stays. The marker and an empty manifest are kept. Returns the removed ids and the partials deleted."""
    removed = [entry.id for entry in store.entries().values() if store.evict(entry)]
    return removed, 0 if _fetch_running(store) else sum(store.delete_part(part) for part in store.parts())


def _fetch_running(store: Cache) -> bool:
    """True when some process holds an artifact's fetch lock (`.downloading/*.part.lock`)."""
    from filelock import FileLock, Timeout

    folder = store.root / ".downloading"
    for path in sorted(folder.glob("*.part" + LOCK_SUFFIX)) if folder.is_dir() else ():
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        except OSError:
            continue
        lock.release()
    return False


def verify(store: Cache) -> list[tuple[str, str | None, str | None, str]]:
    """(id, file (None for a single-file artifact), actual sha256 or None if missing, manifest sha256)
    for every file that fails; each file of a set is hashed."""
    bad = []
    for entry in store.entries().values():
        for item in entry.file_list():
            path = store.root / item["path"]
            actual = None  # missing, or not a regular file (reported, never opened: a FIFO would block)
            if regular(path):
                actual = sha256_file(path)
            elif os.path.lexists(path):
                store.warnings.append(f"{path} is not a regular file; it was not read and counts as missing")
            if actual != item["sha256"]:
                bad.append((entry.id, item["name"] if entry.files else None, actual, item["sha256"], entry.sha256))
    if bad:  # an artifact removed or re-fetched by another process while this one read is not bad
        now = store.entries()
        bad = [item for item in bad if item[0] in now and now[item[0]].sha256 == item[4]]
    return [item[:4] for item in bad]
