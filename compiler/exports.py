"""Exports: each host's compiled catalog rendered into other tools' formats by jinja2 templates.

Built-in templates ship in compiler/templates/; a catalog's own templates/<file>.j2 overrides a
built-in of the same file name or adds an export named after the file. A host chooses with
`exports:` in hosts.yaml (default: every built-in). Templates render in jinja2's
SandboxedEnvironment with StrictUndefined; catalog values are data, never template source, so an
ingested description holding `{{ ... }}` comes out literally.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .errors import Diagnostic, InputError

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
PER_HOST = {"litellm": "litellm-config.yaml", "llamacpp": "llama-server.sh", "models-md": "MODELS.md"}
PER_MODEL = {"ollama": "ollama.Modelfile"}  # one file per local GGUF model: ollama/<id>.Modelfile
BUILTINS = (*PER_HOST, *PER_MODEL)
LOCAL = ("local", "ollama", "huggingface")


def _environment(catalog_templates: Path | None):
    folders = tuple(str(p) for p in (catalog_templates, PACKAGE_TEMPLATES) if p is not None and p.is_dir())
    return _environment_for(folders)


@functools.cache
def _environment_for(folders: tuple[str, ...]):
    """One sandboxed environment per set of template folders: its compiled templates serve every host
    (jinja2 reloads a template whose file changed)."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(loader=jinja2.FileSystemLoader(list(folders)), undefined=jinja2.StrictUndefined,
                                autoescape=False, keep_trailing_newline=True, trim_blocks=False)


def available(catalog_templates: Path | None) -> list[str]:
    extra = sorted(p.name[:-3] for p in catalog_templates.glob("*.j2")) if catalog_templates and \
        catalog_templates.is_dir() else []
    return [*BUILTINS, *(name for name in extra if name not in PER_HOST.values() and name not in PER_MODEL.values())]


def render(document: dict, names: list[str] | None, catalog_templates: Path | None) -> dict[str, bytes]:
    """Relative path under out/<host>/exports/ -> bytes, for every export the host asks for."""
    import jinja2

    env = _environment(catalog_templates)
    chosen = list(BUILTINS) if names is None else names
    context = {key: document[key] for key in ("host", "roles", "models", "aliases", "profiles")}
    files: dict[str, bytes] = {}
    known = available(catalog_templates)
    for name in chosen:
        if name not in known:
            raise InputError([Diagnostic("sources/hosts.yaml", 0, 0, "E214", f"unknown export {name!r}",
                                         f"exports: {', '.join(known)}")])
        try:
            if name in PER_MODEL:
                template = env.get_template(PER_MODEL[name] + ".j2")
                for model_id, model in sorted(document["models"].items()):
                    artifact = model.get("artifact") or {}
                    if model.get("provider") not in LOCAL or artifact.get("format") != "gguf" or not artifact.get("file"):
                        continue
                    contexts = [r["context"] for r in document["roles"].values()
                                if r.get("context") and r["model"] == model_id]
                    window = model.get("context_window") or 4096
                    text = template.render(**context, model_id=model_id, model=model,
                                           context=max(contexts, default=min(window, 4096)))
                    files[f"{name}/{model_id.replace('/', '%2F').replace(':', '%3A')}.Modelfile"] = text.encode()
            else:
                file = PER_HOST.get(name, name)
                files[file] = env.get_template(file + ".j2").render(**context).encode()
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or name
            raise InputError([Diagnostic(str(where), getattr(exc, "lineno", 0) or 0, 0, "E215",
                                         f"export {name!r} cannot be rendered: {exc}")]) from exc
    return files
