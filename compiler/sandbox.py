"""The sandbox catalog templates render in: jinja2's SandboxedEnvironment, bounded.

Templates are bounded: range() yields at most MAX_RANGE items and MAX_STEPS in all per file, `*` and
`**` cannot build huge strings or numbers, and the filters and methods that take a size (center, format
widths, indent, join, replace, ...) refuse one that would build more than MAX_OUTPUT; those are for a
clear message. The bound itself is general: each file renders under a CPU-time limit (MAX_SECONDS, a
SIGPROF timer) and an address-space limit (RLIMIT_AS lowered to what the process uses + MAX_MEMORY),
both restored when the render ends, however it ends. Both are process-wide, so they are set only in a
process's single thread (the CLI); rendered from another thread, the time limit is checked at each call,
operator and range step instead, and memory is bounded by the size checks alone.
A file is at most MAX_OUTPUT; anything a template raises becomes E215 at the template's file and line.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import string
import threading
import time

MAX_RANGE = 10_000  # items in one range()
MAX_STEPS = 1_000_000  # range() items in all, per rendered file: nested loops end in well under a second
MAX_OUTPUT = 16 * 1024 * 1024  # bytes of one rendered file
MAX_BITS = 1 << 16  # `**` and `*` on numbers: results up to 65,536 bits
MAX_SECONDS = 10  # CPU seconds to render one file (the shipped templates take milliseconds)
MAX_MEMORY = 512 * 1024 * 1024  # address space one render may add: 16 MiB of output, copied a few times, fits
MAX_INDENT = 64  # tojson(indent=N): each nesting level repeats it on every line


def bounds() -> str:
    """The bounds, as the E215 hint states them (a function: tests lower them)."""
    return (f"templates are bounded: range() {MAX_RANGE:,} items, {MAX_STEPS:,} range() steps, "
            f"{MAX_OUTPUT // (1024 * 1024)} MiB of output, {MAX_SECONDS} s of CPU time and "
            f"{MAX_MEMORY // (1024 * 1024)} MiB of memory per file")


def text(value) -> str:
    return value if isinstance(value, str) else str(value)


def _range(steps: list[int], *args) -> "_Range":
    """range() for templates: at most MAX_RANGE items, each one taken counted against the file's steps."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise OverflowError(f"range() of {len(items):,} items; templates may use at most {MAX_RANGE:,}")
    return _Range(items, steps)


class _Range:
    def __init__(self, items: range, steps: list[int]):
        self.items, self.steps = items, steps

    def __len__(self):
        return len(self.items)

    def __contains__(self, item):
        return item in self.items

    def __getitem__(self, index):
        return _Range(self.items[index], self.steps) if isinstance(index, slice) else self.items[index]

    def __iter__(self):
        return self._count(self.items)

    def __reversed__(self):
        return self._count(reversed(self.items))

    def _count(self, items):
        for item in items:
            self.steps[0] += 1
            if self.steps[0] > MAX_STEPS:
                raise OverflowError(f"more than {MAX_STEPS:,} range() steps in one file")
            if not self.steps[0] & 1023:
                _tick()
            yield item


def _bounded_binop(operator: str, left, right):
    """`*`, `**` and `%` that cannot build a huge string, list or number (a template would hang or run out
    of memory long before MAX_OUTPUT was checked)."""
    _tick()
    if operator == "%":
        if isinstance(left, str):
            _check("%", _percent_size(left, right if isinstance(right, tuple) else (right,)), MAX_OUTPUT)
        return left % right
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
    if operator == "**" and numbers and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and max(abs(left), 2).bit_length() * right > MAX_BITS:
        raise OverflowError(f"{left} ** {right} is too large for a template")
    if operator == "*" and not numbers:
        count, seq = (left, right) if isinstance(left, int) else (right, left)
        limit = MAX_OUTPUT if isinstance(seq, str) else MAX_STEPS
        if isinstance(count, int) and hasattr(seq, "__len__") and len(seq) * count > limit:
            raise OverflowError(f"a sequence of {len(seq):,} items times {count:,} is too large for a template")
    if operator == "*" and numbers and isinstance(left, int) and isinstance(right, int) \
            and abs(left).bit_length() + abs(right).bit_length() > MAX_BITS:
        raise OverflowError("a product too large for a template")
    return left * right if operator == "*" else left ** right


# ------------------------------------------------------------------ sizes taken as arguments
# What a size-taking filter or str method would build, from its own arguments (same signature, the
# value first): refused before it runs, with a message naming it. Not the bound (the limits below are):
# these only make the usual ways to ask for gigabytes fail at once and say why.

def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _sized(value) -> int:
    return len(value) if hasattr(value, "__len__") else 0


def _width(value, width=80, *_, **__):  # center, ljust, rjust, zfill
    return _int(width)


def _indent(s, width=4, *_, **__):
    return (text(s).count("\n") + 1) * (len(width) if isinstance(width, str) else _int(width))


def _wordwrap(s, width=79, break_long_words=True, wrapstring=None, *_, **__):
    return len(text(s)) + (len(text(s)) // max(_int(width), 1) + 1) * len(text(wrapstring or "\n"))


def _replace(s, old, new, count=None, *_, **__):
    s, old, new = text(s), text(old), text(new)
    found = s.count(old) if old else len(s) + 1
    if count is not None and _int(count) >= 0:
        found = min(found, _int(count))
    return len(s) + found * len(new)


def _join(value, d="", *_, **__):  # the filter: separator second
    return max(_sized(value) - 1, 0) * len(text(d))


def _str_join(separator, iterable=(), *_, **__):  # the method: separator first
    return _join(iterable, separator)


def _percent_size(template: str, args: tuple) -> int:
    """The widths and precisions a %-format asks for (`*` takes them from the arguments)."""
    total = 0
    for match in re.finditer(r"%%|%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?", template):
        for number in match.groups():
            total += _number(number) if number and number != "*" else 0
        if "*" in match.group(0):
            total += sum(abs(_int(arg)) for arg in args)
    return total


def _format_size(template, /, *args, **kwargs) -> int:
    """The widths and precisions a str.format template asks for (nested fields take arguments)."""
    total = 0
    try:
        for _, _, spec, _ in string.Formatter().parse(text(template)):
            total += sum(_number(n) for n in re.findall(r"\d+", spec or ""))
            if spec and "{" in spec:
                total += sum(abs(_int(arg)) for arg in (*args, *kwargs.values()))
    except ValueError:
        return 0  # a malformed template: the call itself says so
    return total


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else 10 ** 18


def _format_map(template, mapping=None, *_, **__):
    return _format_size(template, *(mapping.values() if isinstance(mapping, dict) else ()))


def _lipsum(n=5, html=True, low=20, high=100, *_, **kwargs):  # jinja2 names the last two min and max
    words = [_int(kwargs.get("min", low)), _int(kwargs.get("max", high))]
    return _int(n) * sorted(words)[-1] * 12  # words of up to a dozen characters


# name -> (what it would build, the most allowed, in what)
FILTER_SIZES = {
    "center": (_width, MAX_OUTPUT, "characters"), "indent": (_indent, MAX_OUTPUT, "characters"),
    "wordwrap": (_wordwrap, MAX_OUTPUT, "characters"), "replace": (_replace, MAX_OUTPUT, "characters"),
    "join": (_join, MAX_OUTPUT, "characters"), "format": (lambda v, /, *a, **k: _percent_size(text(v), a or (k,)),
                                                          MAX_OUTPUT, "characters of width"),
    "tojson": (lambda value, indent=None, *_, **__: len(indent) if isinstance(indent, str) else _int(indent),
               MAX_INDENT, "spaces of indent"),
    "batch": (lambda value, linecount, fill_with=None, *_, **__: _int(linecount) if fill_with is not None else 0,
              MAX_STEPS, "items"),
    "slice": (lambda value, slices, *_, **__: _int(slices), MAX_STEPS, "slices"),
}
METHOD_SIZES = {  # str methods called from a template
    "center": _width, "ljust": _width, "rjust": _width, "zfill": _width, "replace": _replace, "join": _str_join,
    "expandtabs": lambda s, tabsize=8, *_, **__: len(s) + s.count("\t") * _int(tabsize),
    "format": _format_size, "format_map": _format_map,
}


def _check(name: str, size: int, limit: int, unit: str = "characters") -> None:
    if size > limit:
        raise OverflowError(f"{name}() would make {size:,} {unit}; a template may make at most {limit:,}")


def _guarded(name: str, function, estimate, limit: int, unit: str):
    """`function` (a jinja2 filter or global) that first checks the size its arguments ask for."""
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0  # the context jinja2 passes first

    @functools.wraps(function)  # keeps jinja_pass_arg
    def guarded(*args, **kwargs):
        _tick()
        _check(name, estimate(*args[skip:], **kwargs), limit, unit)
        return function(*args, **kwargs)
    return guarded


# ------------------------------------------------------------------------- time and memory
# The general bound: whatever a template does, one file renders in at most MAX_SECONDS of CPU time
# and MAX_MEMORY more address space. A signal and an rlimit act on the whole process, so they are
# used only when it runs this one thread (the CLI); any other thread gets the cooperative checks.

_local = threading.local()  # .deadline: thread CPU time at which this thread's render is stopped


def _tick() -> None:
    """Stop a render past its deadline (called at each call, operator and 1,024th range step: a loop
    that makes none of these ends at MAX_OUTPUT, or else does nothing, unbounded only off the main thread).
    Under the CPU-time timer the timer checks, so this costs nothing: reading a thread's CPU clock is a
    system call, which made it most of the time a render took."""
    if not getattr(_local, "timed", False):
        _past_deadline()


def _past_deadline() -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.thread_time() > deadline:
        raise OverflowError(f"rendering took more than {MAX_SECONDS} s of CPU time")


def _on_timer(signum, frame) -> None:
    _past_deadline()  # in the main thread: raises there, wherever the template is; repeats until disarmed


@contextlib.contextmanager
def limits():
    """Render under the time and memory bounds; everything restored on the way out, however it ends."""
    _local.deadline = time.thread_time() + MAX_SECONDS
    undo = []
    try:
        if threading.current_thread() is threading.main_thread() and threading.active_count() == 1:
            undo.append(_limit_memory())
            undo.append(_arm_timer())
            _local.timed = undo[-1] is not None
        yield
    finally:
        _local.deadline = None  # first: a timer firing now does nothing
        _local.timed = False
        for restore in reversed(undo):
            if restore is not None:
                restore()


def _limit_memory():
    """RLIMIT_AS lowered to the address space in use + MAX_MEMORY (never raised); its restorer, or None
    where the platform has no such limit (then the size checks are the memory bound)."""
    try:
        import resource

        statm = os.open("/proc/self/statm", os.O_RDONLY)  # the address space in use, in pages
        try:
            used = int(os.read(statm, 128).split()[0]) * os.sysconf("SC_PAGE_SIZE")
        finally:
            os.close(statm)
        saved = resource.getrlimit(resource.RLIMIT_AS)
        soft, hard = saved
        limit = used + MAX_MEMORY
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft != resource.RLIM_INFINITY and soft <= limit:
            return None  # already tighter
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    return functools.partial(resource.setrlimit, resource.RLIMIT_AS, saved)  # built now: restoring allocates nothing


def _arm_timer():
    """A CPU-time timer (SIGPROF) that interrupts the render wherever it is, repeating every 0.1 s
    until disarmed; None when the platform has none or someone else uses SIGPROF (left alone)."""
    if not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGPROF) not in (signal.SIG_DFL, None) \
            or signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
        return None
    previous = signal.signal(signal.SIGPROF, _on_timer)
    signal.setitimer(signal.ITIMER_PROF, MAX_SECONDS, 0.1)

    def restore():
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    return restore


def environment(loader, filters: dict):
    """A sandboxed environment (StrictUndefined, no autoescape) under these bounds, with `filters` added."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    class Bounded(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context, operator, left, right):
            return _bounded_binop(operator, left, right)

        def call(self, context, obj, /, *args, **kwargs):
            _tick()
            method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format and format_map
            owner = getattr(method, "__self__", None)
            if isinstance(owner, str) and getattr(method, "__name__", None) in METHOD_SIZES:
                _check(method.__name__, METHOD_SIZES[method.__name__](owner, *args, **kwargs), MAX_OUTPUT)
            return super().call(context, obj, *args, **kwargs)

    env = Bounded(loader=loader, undefined=jinja2.StrictUndefined,
                  autoescape=False, keep_trailing_newline=True, trim_blocks=False)
    env.filters.update(filters)
    for name, (estimate, limit, unit) in FILTER_SIZES.items():
        env.filters[name] = _guarded(name, env.filters[name], estimate, limit, unit)
    env.globals["lipsum"] = _guarded("lipsum", env.globals["lipsum"], _lipsum, MAX_OUTPUT, "characters")
    return env


def render(template, context: dict) -> bytes:
    """One file, its size bounded while it is produced; range() is this render's own (steps per file)."""
    steps = [0]
    chunks, size = [], 0
    with limits():
        for chunk in template.generate(**context, range=functools.partial(_range, steps)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise OverflowError(f"output larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
            chunks.append(chunk)
        return "".join(chunks).encode()
