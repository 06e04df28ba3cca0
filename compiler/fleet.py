"""Fleet builds: the per-host stage of a large inventory in worker processes, one per CPU.

The workers are forked once the sources are loaded and every distinct catalog is merged, checked and
resolved, so they inherit all of it (nothing is pickled but small results). Each takes chunks of hosts,
compiles them (Project.compile_host) and stages each host's outputs in the build's publication as soon
as it is compiled (or, for --check, compares them), keeping none: memory stays flat however many hosts.
The parent, which holds the build lock, publishes once every chunk is back and no host failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import paths
from .errors import RuntimeFailure, UsageError

MIN_HOSTS = 64  # below this, forking costs more than it saves (and small builds stay in one process)
CHUNK = 16  # hosts per task: small enough to balance two workers, large enough to amortise the messages

_state: tuple | None = None  # (project, jobs, out_root, publication), inherited by the forked workers


def workers() -> int:
    """How many worker processes a large build uses: HOSTFIT_BUILD_JOBS, else one per CPU this process may use."""
    value = paths.env(paths.HOSTFIT_BUILD_JOBS)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"{paths.HOSTFIT_BUILD_JOBS} must be a whole number of processes, 1 or more: {value!r}")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parallel(hosts: int) -> bool:
    """Whether to fork workers for this many hosts: Linux's fork (the workers inherit the catalogs) and
    enough hosts (with one CPU, one worker: it still streams, so memory stays flat). A smaller build keeps
    every host's bytes until all compiled, so a failed one writes nothing at all; a fleet build takes the
    build lock (out/.cache/build.lock) before its workers start, and removes what it staged if one fails."""
    return sys.platform.startswith("linux") and hosts >= MIN_HOSTS


def run(project, jobs: list, out_root: Path, publication, report) -> None:
    """Compile `jobs` in worker processes (staging into `publication()` when given), adding each host's (slim) result and problems to `report` in
    the jobs' order, and the hosts staged to report.staged."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from .pipeline import route

    global _state
    if publication is not None:
        publication = publication()  # the lock and the staging folder, before the workers fork
    chunks = [(start, min(start + CHUNK, len(jobs))) for start in range(0, len(jobs), CHUNK)]
    done: list[list] = []  # each chunk's outcome, in the chunks' order
    _state = (project, jobs, out_root, publication)
    try:
        # an executor, not a Pool: a worker killed mid-chunk (the OOM killer) breaks it, where a Pool
        # would wait for that chunk forever, holding the build lock
        with ProcessPoolExecutor(min(workers(), len(chunks)), multiprocessing.get_context("fork"),
                                 initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            pending = [pool.submit(_work, chunk) for chunk in chunks]
            try:
                for future in pending:
                    outcome, failure = future.result()
                    if failure is not None:
                        raise RuntimeFailure(failure)
                    done.append(outcome)
            except BrokenProcessPool as exc:
                raise RuntimeFailure("a build worker ended before its hosts were compiled (killed, perhaps "
                                     "for memory); nothing was published") from exc
            finally:
                for future in pending:  # a failed build stops at the chunks already running
                    future.cancel()
    finally:
        _state = None
    for outcome in done:
        for result, problems in outcome:
            route(problems, report.errors, report.warnings)
            if result is not None:
                report.results.append(result)
                if result.staged:
                    report.staged.append(result.folder.name)


def _work(chunk: tuple[int, int]):
    """One chunk of hosts in a worker: ([(slim result, problems)], None), or a run-time failure's
    message in place of the results (a full disk: the parent stops and stages nothing more)."""
    from .errors import HostfitError

    project, jobs, out_root, publication = _state
    start, end = chunk
    try:
        outcome = [project.compile_host(job, out_root, publication and (lambda: publication), keep_outputs=False)
                   for job in jobs[start:end]]
        if publication is not None:
            publication.sync_written()  # where there is no syncfs, this worker's files, fsynced here
    except (HostfitError, OSError) as exc:
        return None, str(exc)
    return outcome, None


def _die_with_parent(parent: int) -> None:
    """A worker ends with the build that forked it (Linux PR_SET_PDEATHSIG): a build killed with -9 leaves
    no worker writing into a staging folder the next build removes."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
