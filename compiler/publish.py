"""Writing out/: each host's outputs (models.json, explain.json, exports/) replace the old ones as
one unit, so a build killed at any instant leaves every host complete, old or new.

A build holds out/.cache/build.lock, so two builds take turns. It stages each host whose outputs
differ in a private folder out/.cache/staging-*/ (new bytes written there, unchanged files
hard-linked so they keep their mtimes, files the build does not own, such as models.lock, carried
over), and only once every host is staged swaps each staged folder with out/<host> in one rename
(Linux renameat2 RENAME_EXCHANGE; elsewhere two renames, which the next build undoes if it was
interrupted between them). Before the first swap one flush (Linux syncfs, else an fsync per file)
makes every staged file durable. A failed write (a full disk) leaves out/ as it was. The next build
removes whatever an interrupted one left. Outputs honour the umask; a script (`#!`) is executable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from .errors import RuntimeFailure
from .exports import is_executable

OWNED = ("models.json", "explain.json", "exports")  # what a build writes into out/<host>/; the rest it carries
LOCK_WAIT_S = 300.0  # how long a build waits for another one before it gives up (exit 3)
LOCK_NAME = "build.lock"


# ------------------------------------------------------------------------------------ the lock

_held: dict[str, int] = {}  # out folders this process has locked, with nesting depth


@contextlib.contextmanager
def locked(out_root: Path, wait_s: float | None = None, on_wait=None):
    """Hold out/.cache/build.lock (re-entrant within a process), then remove what a build killed
    earlier left. `on_wait(message)` is called once if another build holds the lock; after `wait_s`
    seconds a RuntimeFailure says who holds it."""
    key = os.path.abspath(out_root)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = Path(out_root) / ".cache" / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {path} (the build lock): {exc.strerror or exc}") from exc
    try:
        _acquire(fd, path, LOCK_WAIT_S if wait_s is None else wait_s, on_wait)
        _held[key] = 1
        try:
            cleanup(Path(out_root))
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the lock; a killed build's lock is released by the kernel


def _acquire(fd: int, path: Path, wait_s: float, on_wait) -> None:
    deadline = time.monotonic() + wait_s
    told = False
    while not _try_lock(fd):
        holder = _read_holder(fd)
        if time.monotonic() >= deadline:
            raise RuntimeFailure(f"another build (pid {holder}) has held {path} for over {wait_s:.0f} s; "
                                 "try again when it is done")
        if on_wait is not None and not told:
            on_wait(f"waiting for another build (pid {holder}) to finish writing {path.parent.parent}")
            told = True
        time.sleep(0.05)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid():<12}\n".encode())  # fixed width: no truncation, no stale digits
    except OSError:
        pass  # only the waiting message of another build would miss the pid


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        words = os.read(fd, 32).decode(errors="replace").split()
        return words[0] if words else "?"
    except OSError:
        return "?"


def _try_lock(fd: int) -> bool:
    try:
        if sys.platform == "win32":
            import msvcrt
            os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise RuntimeFailure(f"cannot take the build lock: {exc.strerror or exc}") from exc
    return True


# ------------------------------------------------------------------------------------ modes

def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def mode_for(data: bytes, umask: int) -> int:
    """0644 under a 022 umask; 0755 for a script, so `exports/llama-server.sh` runs as it is."""
    return (0o777 if is_executable(data) else 0o666) & ~umask


# ------------------------------------------------------------------------------------ publishing

class Publication:
    """One build's writes, for builds that stream: each host staged as soon as it is compiled (by this
    process or by a worker it forked), then every changed host swapped in by `commit`, or nothing
    when the build ends without it (the staging folder goes). Create it with the lock held.

    Durability costs one flush per build, not one per file: every new file is written into the
    staging folder, then one syncfs(2) of the out/ file system makes all of them durable before the
    first swap (elsewhere, each file is fsynced, in one pass). A build killed before that flush has
    swapped nothing; after it, each swap shows complete files."""

    def __init__(self, out_root: Path):
        self.out_root = Path(out_root)
        self.umask = current_umask()
        self.written: list[Path] = []  # files to fsync one by one where there is no syncfs
        try:
            self.staging = Path(tempfile.mkdtemp(prefix="staging-", dir=self.out_root / ".cache"))
            (self.staging / "new").mkdir()
            (self.staging / "old").mkdir()
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {self.out_root / '.cache'}: {exc.strerror or exc}") from exc

    def __enter__(self) -> "Publication":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the staging folder (what it holds once committed: the hosts' old folders)."""
        with contextlib.suppress(OSError):  # what it cannot undo now, the next build will
            _discard(self.staging, self.out_root)

    def stage(self, name: str, files: dict[str, bytes]) -> set[str] | None:
        """Stage out/<name>/ holding `files`; None when it holds them already (nothing staged), else
        the names among `files` that were already right (hard-linked, not written)."""
        same = _unchanged(self.out_root / name, files, self.umask)
        if same is None:
            return None
        try:
            self.written += _stage(self.out_root / name, self.staging / "new" / name, files, same, self.umask)
        except OSError as exc:
            raise _failure(exc, self.out_root) from exc
        return same

    def sync_written(self) -> None:
        """Where there is no syncfs: fsync what this process staged (a worker calls it for its own files)."""
        if _syncfs() is None:
            try:
                for path in self.written:
                    _fsync(path)
            except OSError as exc:
                raise _failure(exc, self.out_root) from exc
        self.written = []

    def commit(self, changed: list[str]) -> None:
        """Every staged host durable, then swapped with out/<host>/, in order."""
        if not changed:
            return
        try:
            for name in changed:  # before the flush, which makes what is carried durable too
                self.written += _carry(self.out_root / name, self.staging / "new" / name)
            syncfs = _syncfs()
            if syncfs is None:
                self.sync_written()
            else:
                syncfs(self.staging)
            for name in changed:
                _swap(self.staging / "new" / name, self.out_root / name, self.staging / "old" / name)
        except OSError as exc:
            raise _failure(exc, self.out_root) from exc


def _failure(exc: OSError, out_root: Path) -> RuntimeFailure:
    where = exc.filename or out_root
    return RuntimeFailure(f"cannot write {where}: {exc.strerror or exc}; "
                          f"hosts not yet replaced keep their previous outputs")


def _libc(name: str, argtypes: list):
    """The Linux C library's function `name` (errno kept), or False where there is none."""
    if sys.platform.startswith("linux"):
        import ctypes
        with contextlib.suppress(OSError, AttributeError):
            function = getattr(ctypes.CDLL(None, use_errno=True), name)
            function.argtypes = argtypes
            return function
    return False


_syncfs_call = None  # resolved on first use; False when the C library has none


def _syncfs():
    """A function flushing the file system holding a path (Linux syncfs(2): one journal commit for
    all of a build's files, where an fsync per file commits once per file); None elsewhere."""
    global _syncfs_call
    if _syncfs_call is None:
        import ctypes
        _syncfs_call = _libc("syncfs", [ctypes.c_int])
    if not _syncfs_call:
        return None

    def flush(path: Path) -> None:
        import ctypes
        fd = os.open(path, os.O_RDONLY)
        try:
            if _syncfs_call(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(path))
        finally:
            os.close(fd)
    return flush


def cleanup(out_root: Path) -> None:
    """Undo what an interrupted build left in out/.cache/: a host folder moved aside goes back, staging
    folders and temporary files go. Called with the lock held."""
    cache = Path(out_root) / ".cache"
    try:
        for entry in sorted(cache.iterdir()) if cache.is_dir() else ():
            if entry.name.startswith("staging-") and entry.is_dir() and not entry.is_symlink():
                _discard(entry, Path(out_root))
            elif entry.name.endswith(".tmp") and entry.is_file():
                entry.unlink(missing_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"cannot tidy {cache} after an interrupted build: {exc.strerror or exc}") from exc


def _discard(staging: Path, out_root: Path) -> None:
    """Remove a staging folder, first putting back a host folder moved aside (a build stopped between
    the two renames of _swap)."""
    for moved in sorted((staging / "old").glob("*")):
        if not os.path.lexists(out_root / moved.name):
            os.rename(moved, out_root / moved.name)
    _remove(staging)


def _unchanged(folder: Path, files: dict[str, bytes], umask: int) -> set[str] | None:
    """None if out/<host>/ holds these exact bytes and modes and no other owned file (nor a temporary
    file an older hostfit left); else the names among `files` that are already right."""
    same = {name for name, data in files.items() if _same_file(folder / name, data, umask)}
    return None if same == set(files) == set(_owned_files(folder)) else same


def _owned_files(folder: Path) -> list[str]:
    """The relative paths under out/<host>/ that a build owns: models.json, explain.json, exports/**,
    and the `.models.json.*.tmp` files an older, interrupted hostfit wrote beside them."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if entry.name == "exports" and entry.is_dir(follow_symlinks=False):
            root = Path(entry.path)
            for dirpath, _, filenames in os.walk(root):
                found += [str((Path(dirpath) / n).relative_to(folder)) for n in filenames]
        elif entry.name in OWNED or _leftover(entry.name):
            found.append(entry.name)
    return found


def _leftover(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{owned}.") for owned in OWNED)


def _same_file(path: Path, data: bytes, umask: int) -> bool:
    """Whether `path` is a plain file holding exactly `data` with the mode it should have."""
    try:
        st = path.lstat()
        return stat.S_ISREG(st.st_mode) and st.st_size == len(data) \
            and st.st_mode & 0o7777 == mode_for(data, umask) and path.read_bytes() == data
    except OSError:
        return False


def _stage(folder: Path, staged: Path, files: dict[str, bytes], same: set[str], umask: int) -> list[Path]:
    """The host's new folder, at `staged`; returns the files written or copied (the rest are links)."""
    staged.mkdir()
    with contextlib.suppress(OSError):
        shutil.copymode(folder, staged)
    written, folders = [], {staged}
    for name, data in sorted(files.items()):
        target = staged / name
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(target.parent)
        if name in same:
            if _link_or_copy(folder / name, target):  # the same inode: its mtime stays, git sees no change
                written.append(target)
        else:
            _write_new(target, data, mode_for(data, umask))
            written.append(target)
    return written


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _carry(folder: Path, staged: Path) -> list[Path]:
    """Bring along what the build does not own (models.lock, a user's notes), under the build lock
    (models.lock is written under it too); returns the files copied (not linked), to be flushed."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    copied: list[Path] = []

    def carry(source, target) -> None:
        if _link_or_copy(source, target):
            copied.append(Path(target))

    for entry in entries:
        if entry.name in OWNED or _leftover(entry.name):
            continue
        target = staged / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True, copy_function=carry)
        else:
            carry(entry.path, target)
    return copied


def _link_or_copy(source, target) -> bool:
    """Hard-link `source` at `target`; True when it had to copy it (new data, not yet durable)."""
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)
        return True
    return False


def _swap(staged: Path, folder: Path, aside: Path) -> None:
    """Put `staged` at `folder` in one step; the old folder ends up in staging, to be removed."""
    if not os.path.lexists(folder):
        os.rename(staged, folder)
        return
    if _exchange(staged, folder):
        return
    os.rename(folder, aside)  # cleanup() puts it back if this build dies before the next line
    os.rename(staged, folder)


_RENAME_EXCHANGE = 2
_renameat2 = None  # resolved on first use; False when the C library has none


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux 3.15+); False where that is not available."""
    import ctypes
    global _renameat2
    if _renameat2 is None:
        _renameat2 = _libc("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint])
    if not _renameat2:
        return False
    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # a file system without it
        _renameat2 = False
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
