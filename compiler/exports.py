"""Exports: each host's compiled catalog rendered into other tools' formats by jinja2 templates.

Built-in templates ship in compiler/templates/; a catalog's own templates/<file>.j2 overrides a
built-in of the same file name or adds an export named after the file. A host chooses with
`exports:` in hosts.yaml (default: every built-in). Templates render in jinja2's
SandboxedEnvironment with StrictUndefined; catalog values are data, never template source, so an
ingested description holding `{{ ... }}` comes out literally.

Values are data in the target language too: templates pass every value through the filter for the
language they write (`sh`, `modelfile`, `modelfile_text`, `yaml`, `md`, and `oneline` in comments),
which quotes or escapes it, or refuses what that language cannot hold (E215). Validation keeps names
to safe characters as well (validate.NAMES); the filters are the second line.

Templates are bounded (compiler/sandbox.py): time, memory, output size, range() and the size-taking
filters; anything a template raises becomes E215 at the template's file and line.

Template files are regular files inside the catalog: a FIFO, device or folder is refused (E018, never
opened), a link leading outside the catalog is refused (E234), a dangling link is E019.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import traceback
from pathlib import Path

from . import sandbox
from .errors import Diagnostic, InputError
from .load import fail, read_regular

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
PER_HOST = {"litellm": "litellm-config.yaml", "llamacpp": "llama-server.sh", "models-md": "MODELS.md"}
PER_MODEL = {"ollama": "ollama.Modelfile"}  # one file per local GGUF model: ollama/<id>.Modelfile
BUILTINS = (*PER_HOST, *PER_MODEL)
LOCAL = ("local", "ollama", "huggingface")
LLAMA_SERVER_PORT = 8080  # llama-server.sh: the first served role's port; the others follow, in role order


def is_executable(data: bytes) -> bool:
    """Which exports the build writes executable (mode 0755 under the usual umask): scripts, i.e. files
    that start with `#!` (llama-server.sh, and a catalog template's script alike)."""
    return data.startswith(b"#!")


# ---------------------------------------------------------------------------------- filters

class Unexpressible(ValueError):
    """A value the target language cannot hold; the template's render fails with E215."""


def sh(value) -> str:
    """One POSIX shell word that is exactly `value` (shlex.quote: single quotes unless plainly safe)."""
    text = sandbox.text(value)
    if "\0" in text:
        raise Unexpressible(f"a shell word cannot hold a NUL character: {text!r}")
    return shlex.quote(text)


def oneline(value) -> str:
    """Text for a comment (shell, YAML, Modelfile): characters that could end the line, and other
    non-printable ones, escaped as \\xNN / \\uNNNN so the comment stays one line."""
    text = sandbox.text(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def modelfile(value) -> str:
    """A one-line Ollama Modelfile argument (FROM, PARAMETER). Ollama's parser has no escapes: a value
    ends at the line's end, outer spaces are trimmed unless the value is in double quotes, and a value
    starting with `\"\"\"` runs to the next `\"\"\"`. So: printable characters only, quoted when it has outer
    spaces or starts with a quote, refused when even quotes cannot keep it."""
    text = sandbox.text(value)
    if not text or not text.isprintable():
        raise Unexpressible(f"a Modelfile value must be one non-empty line of printable characters: {text!r}")
    if text != text.strip() or text.startswith('"'):
        if text.startswith('""'):
            raise Unexpressible(f"a Modelfile value cannot start with two quotes: {text!r}")
        return f'"{text}"'
    return text


def modelfile_text(value) -> str:
    """A multi-line Modelfile argument (TEMPLATE, SYSTEM, LICENSE) in triple quotes; a value holding
    `\"\"\"` (which would end it) or control characters other than line breaks and tabs is refused."""
    text = sandbox.text(value)
    if '"""' in text or not text.replace("\n", "").replace("\t", "").isprintable():
        raise Unexpressible(f"a Modelfile text cannot hold \"\"\" or control characters: {text!r}")
    return f'"""{text}"""'


def yaml(value) -> str:
    """A YAML double-quoted scalar that loads as exactly `value`'s text: `\\` and `\"` escaped, and every
    non-printable character (line breaks of YAML 1.1 and 1.2 included) as an escape."""
    text = sandbox.text(value)
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return '"' + "".join("\\" + c if c in '"\\' else c if c.isprintable() else _escape(c) for c in text) + '"'


_MD_INLINE = re.compile(r"[\\`*\[\]<>|&~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_BLOCK = re.compile(r"^(?:[#+=-]+(?=\s|$)|\d{1,9}(?=[.)](?:\s|$)))")


def md(value) -> str:
    """Markdown text that shows `value` as written, on one line: inline markup (emphasis, code, links,
    HTML, entities, table cells) backslash-escaped, a leading block marker (heading, list, rule)
    escaped, line breaks and other non-printable characters shown as spaces."""
    text = sandbox.text(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(0), text)
    return _MD_BLOCK.sub(lambda m: m.group(0) + "\\" if m.group(0)[0].isdigit() else "\\" + m.group(0), text, 1)


FILTERS = {"sh": sh, "oneline": oneline, "modelfile": modelfile, "modelfile_text": modelfile_text, "yaml": yaml,
           "md": md}


# ------------------------------------------------------------------------------ the sandbox

def _environment(catalog_templates: Path | None):
    folders = ((str(catalog_templates), str(catalog_templates.parent)),) \
        if catalog_templates is not None and catalog_templates.is_dir() else ()
    return _environment_for((*folders, (str(PACKAGE_TEMPLATES), str(PACKAGE_TEMPLATES.parent.parent))))


def _shown(path: str, root: str) -> str:
    """A template's path as diagnostics show it: relative to the catalog (or to the repository, for a
    built-in: compiler/templates/<file>)."""
    return os.path.relpath(path, root)


@functools.cache
def _environment_for(folders: tuple[tuple[str, str], ...]):
    """One sandboxed environment per set of (template folder, catalog root): its compiled templates
    serve every host (a template whose file changed is read again)."""
    import jinja2
    from jinja2.loaders import split_template_path

    class Loader(jinja2.BaseLoader):
        """Templates from the first folder that has the name; each a regular file inside its root, read
        through load.read_regular (a FIFO or device is refused unopened)."""
        searchpath = [folder for folder, _ in folders]

        def get_source(self, environment, template):
            for folder, root in folders:
                path = os.path.join(folder, *split_template_path(template))
                if not os.path.lexists(path):
                    continue
                display = _shown(path, root)
                real, inside = os.path.realpath(path), os.path.realpath(root)
                if os.path.commonpath([real, inside]) != inside:
                    fail(display, 0, 0, "E234", f"the template is a link to {real!r}, outside the catalog: not read",
                         "templates are files inside the catalog; copy the file in instead of linking to it")
                source = read_regular(Path(path), display).decode("utf-8")  # a dangling link: E019
                mtime = os.stat(real).st_mtime_ns
                return source, path, lambda: _unchanged(path, real, mtime)
            raise jinja2.TemplateNotFound(template)

    return sandbox.environment(Loader(), FILTERS)


def _unchanged(path: str, real: str, mtime: int) -> bool:
    try:
        return os.path.realpath(path) == real and os.stat(real).st_mtime_ns == mtime
    except OSError:
        return False


def available(catalog_templates: Path | None) -> list[str]:
    extra = sorted(p.name[:-3] for p in catalog_templates.glob("*.j2")) if catalog_templates and \
        catalog_templates.is_dir() else []
    return [*BUILTINS, *(name for name in extra if name not in PER_HOST.values() and name not in PER_MODEL.values())]


def _where(exc: BaseException, folders: list[str], fallback: str, root: Path | None) -> tuple[str, int]:
    """The template file and line an exception came from (jinja2 puts template frames in the traceback),
    shown relative to the catalog, or as compiler/templates/<file> for a built-in."""
    import jinja2

    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.filename:
        path, line = exc.filename, exc.lineno or 0
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if any(f.filename.startswith(folder + os.sep) for folder in folders)]
        path, line = (frames[-1].filename, frames[-1].lineno or 0) if frames else (fallback, 0)
    for base, shown in ((str(root) if root else None, ""), (str(PACKAGE_TEMPLATES), "compiler/templates/")):
        if base and path.startswith(base + os.sep):
            return shown + os.path.relpath(path, base), line
    return path, line


def llama_servers(document: dict) -> dict[str, dict]:
    """The roles llama-server.sh serves, each with its port and the file the server opens: roles whose
    runtime is llama.cpp (outputs without `runtime` count as llama.cpp) with a local GGUF file. A file
    set (GGUF shards) is opened by its first file; llama.cpp finds the others beside it. The LiteLLM
    export sends each such role to its port. Resident roles on one model share its one copy (select
    packs it once): the first one's server runs it at the longest of their contexts (its memory the
    grown copy's, the largest of theirs), and the others
    are served there (`shared_with`: that role), on its port."""
    servers: dict[str, dict] = {}
    copies: dict[str, str] = {}  # a resident model -> the role whose server runs its one copy
    for name, role in sorted(document["roles"].items()):
        artifact = (document["models"].get(role.get("model")) or {}).get("artifact") or {}
        first = artifact.get("file") or ((artifact.get("files") or [{}])[0]).get("name")
        if role.get("model") and role.get("runtime", "llamacpp") == "llamacpp" and artifact.get("format") == "gguf" \
                and first:
            owner = copies.get(role["model"]) if role.get("resident") else None
            if owner:
                for key in ("context", "memory_mb"):  # the one copy is the grown one: the largest of theirs
                    servers[owner][key] = max(servers[owner][key] or 0, role.get(key) or 0) or None
                servers[name] = {"port": servers[owner]["port"], "file": first, "shared_with": owner}
                continue
            servers[name] = {"port": LLAMA_SERVER_PORT + server_count(servers), "file": first,
                             "context": role.get("context"), "memory_mb": role.get("memory_mb")}
            if role.get("resident"):
                copies[role["model"]] = name
    return servers


def server_count(servers: dict[str, dict]) -> int:
    """How many servers llama-server.sh starts (roles sharing a resident copy count once)."""
    return sum(1 for server in servers.values() if "shared_with" not in server)


def model_ports(document: dict, servers: dict[str, dict]) -> dict[str, dict]:
    """Where the LiteLLM export sends each local model without an Ollama name, as {"port", "served"}: the
    port of a served role running the same model, else a port of its own after the servers' (nothing
    hostfit writes starts it there: served is false, and the export says so)."""
    running = {}
    for name, server in servers.items():
        running.setdefault(document["roles"][name]["model"], server["port"])
    ports: dict[str, dict] = {}
    following = LLAMA_SERVER_PORT + server_count(servers)
    for _, role in sorted(document["roles"].items()):
        for model_id in ([role["model"]] if role.get("model") else []) + list(role.get("fallbacks") or ()):
            model = document["models"].get(model_id) or {}
            if model_id in ports or model.get("provider") not in LOCAL or model.get("ollama"):
                continue
            if model_id in running:
                ports[model_id] = {"port": running[model_id], "served": True}
            else:
                ports[model_id] = {"port": following, "served": False}
                following += 1
    return ports


def render(document: dict, names: list[str] | None, catalog_templates: Path | None) -> dict[str, bytes]:
    """Relative path under out/<host>/exports/ -> bytes, for every export the host asks for."""
    import jinja2

    env = _environment(catalog_templates)
    chosen = list(BUILTINS) if names is None else names
    context = {key: document[key] for key in ("host", "roles", "models", "aliases", "profiles")}
    context["servers"] = llama_servers(document)
    context["ports"] = model_ports(document, context["servers"])
    files: dict[str, bytes] = {}
    known = available(catalog_templates)
    for name in chosen:
        if name not in known:
            raise InputError([Diagnostic("sources/hosts.yaml", 0, 0, "E214", f"unknown export {name!r}",
                                         f"exports: {', '.join(known)}")])
        file = (PER_MODEL.get(name) or PER_HOST.get(name, name)) + ".j2"
        template = None
        try:
            with sandbox.limits():  # compiling a large template is work too
                template = env.get_template(file)
            if name in PER_MODEL:
                for model_id, model in sorted(document["models"].items()):
                    artifact = model.get("artifact") or {}
                    # a file set has no `file`: Ollama cannot import split GGUFs (ollama/ollama#5245)
                    if model.get("provider") not in LOCAL or artifact.get("format") != "gguf" \
                            or not artifact.get("file"):
                        continue
                    contexts = [r["context"] for r in document["roles"].values()
                                if r.get("context") and r["model"] == model_id]
                    # a split: the fewest GPU layers any role compiled for it (Ollama fits the rest itself)
                    splits = [r["gpu_layers"] for r in document["roles"].values()
                              if r["model"] == model_id and r.get("placement") == "split" and "gpu_layers" in r]
                    window = model.get("context_window") or 4096
                    files[f"{name}/{model_id.replace('/', '%2F').replace(':', '%3A')}.Modelfile"] = rendered(
                        env, template, {**context, "model_id": model_id, "model": model,
                                        "context": max(contexts, default=min(window, 4096)),
                                        "num_gpu": min(splits, default=None)})
            else:
                files[PER_HOST.get(name, name)] = rendered(env, template, context)
        except InputError:
            raise  # a template file that is not read (E018, E019, E234) says so itself
        except Exception as exc:  # noqa: BLE001 - a template, or a value it cannot hold, is E215: never a traceback
            detail = str(exc) if isinstance(exc, (jinja2.TemplateError, Unexpressible)) else \
                f"it needs more than {sandbox.MAX_MEMORY // (1024 * 1024)} MiB of memory" if isinstance(exc, MemoryError) \
                else f"{type(exc).__name__}: {exc}"
            path, line = _where(exc, env.loader.searchpath, getattr(template, "filename", None) or file,
                                catalog_templates.parent if catalog_templates else None)
            hint = sandbox.bounds() if isinstance(exc, (OverflowError, MemoryError)) else \
                "the value cannot be written in this file's language" if isinstance(exc, Unexpressible) else None
            raise InputError([Diagnostic(path, line, 0, "E215", f"export {name!r} cannot be rendered: {detail[:500]}",
                                         hint)]) from exc
    return files


# ------------------------------------------------------------------------- rendered once per plan

# Hosts with the same plan render the same exports but for the host's name, and a Modelfile depends on
# its model alone: so a file is rendered once per distinct value of what its template reads, and
# reused with the name put in. SENTINEL stands for the name in that one render; it is replaced by the
# host's name only where the template writes nothing else of the host (NAME_ONLY) and writes it as it
# is (through filters that leave a host name unchanged), so the bytes are those of a render for the host.
SENTINEL = "hostfit-host-0f9c3e7a5d1b"
RENDERED_MAX = 4096  # renders kept per process: memory stays bounded on any inventory
RENDERED_MAX_BYTES = 64 * 1024 * 1024  # and their bytes: a template may write up to sandbox.MAX_OUTPUT
# the statements around an output that write it to the file unchanged; a filter block, a `set` block,
# a macro or a block captures it instead, to be transformed (`| upper`) before it is written
WRITTEN_AS_IS = ("Template", "If", "For", "With", "Scope")


@functools.lru_cache(maxsize=256)
def _reads(template) -> tuple[frozenset[str], frozenset[str] | None] | None:
    """What a template reads of its context: (top-level names, the filters `host.name` goes through
    when it reads nothing of `host` but its name written out as is; None when it reads more of it). None
    when it cannot be told: a template that includes, imports or extends another reads what that reads."""
    from jinja2 import meta, nodes

    source = template.environment.loader.get_source(template.environment, template.name)[0]
    tree = template.environment.parse(source)
    if SENTINEL in source or any(True for _ in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport,
                                                                  nodes.Extends))):
        return None
    filters: set[str] = set()
    name_only = True
    written_as_is = tuple(getattr(nodes, kind) for kind in WRITTEN_AS_IS)

    def visit(node, parents: tuple) -> None:
        nonlocal name_only
        if isinstance(node, nodes.Name) and node.name == "host" and node.ctx == "load":
            chain = [*reversed(parents)]
            if not (chain and isinstance(chain[0], nodes.Getattr) and chain[0].attr == "name"):
                name_only = False
                return
            at = 1
            while at < len(chain) and isinstance(chain[at], nodes.Filter) and chain[at].node is chain[at - 1] \
                    and not chain[at].args and not chain[at].kwargs and chain[at].dyn_args is None \
                    and chain[at].dyn_kwargs is None:
                filters.add(chain[at].name)
                at += 1
            if not (at < len(chain) and isinstance(chain[at], nodes.Output)
                    and any(child is chain[at - 1] for child in chain[at].nodes)
                    and all(isinstance(outer, written_as_is) for outer in chain[at + 1:])):
                name_only = False
            return
        for child in node.iter_child_nodes():
            visit(child, parents + (node,))

    visit(tree, ())
    return frozenset(meta.find_undeclared_variables(tree)), frozenset(filters) if name_only else None


_rendered: dict[tuple, bytes] = {}
_rendered_bytes = 0  # the sum of _rendered's values' lengths


def rendered(env, template, context: dict) -> bytes:
    """sandbox.render(template, context), from an earlier render of the same inputs where there is one."""
    reads = _reads(template)
    host_name = (context.get("host") or {}).get("name")
    if reads is None or not isinstance(host_name, str):
        return sandbox.render(template, context)
    names, filters = reads
    substitute = filters is not None and all(_keeps(env.filters.get(f), text) for f in filters
                                             for text in (host_name, SENTINEL))
    if "host" in names and not substitute:
        return sandbox.render(template, context)  # it reads the host's facts: no other host shares it
    shown = {name: context[name] for name in sorted(names) if name in context and not (substitute and name == "host")}
    try:
        key_text = json.dumps(shown, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return sandbox.render(template, context)
    if SENTINEL in key_text:
        return sandbox.render(template, context)
    key = (template, substitute, key_text)  # the template itself: a file edited since is a new one
    data = _rendered.get(key)
    if data is None:
        data = sandbox.render(template, {**context, "host": {**context["host"], "name": SENTINEL}}
                              if substitute else context)
        global _rendered_bytes
        if len(_rendered) >= RENDERED_MAX or _rendered_bytes + len(data) > RENDERED_MAX_BYTES:
            _rendered.clear()
            _rendered_bytes = 0
        if len(data) <= RENDERED_MAX_BYTES:
            _rendered[key] = data
            _rendered_bytes += len(data)
    return data.replace(SENTINEL.encode(), host_name.encode()) if substitute else data


def _keeps(function, text: str) -> bool:
    """Whether `function` is one of the quoting filters and writes `text` as it is."""
    if function not in FILTERS.values():
        return False
    try:
        return function(text) == text
    except Unexpressible:
        return False
