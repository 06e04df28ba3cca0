"""Every place hostfit reads or writes outside a catalog repository, every environment variable it
reads, and every default URL: defined here once (README, "Paths and environment variables").

Standard library only: the runtime reader (compiler/runtime.py) imports it.

XDG base directories follow the specification: a value that is unset, empty or not an absolute
path is ignored, and the default under the home folder is used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# ------------------------------------------------------------------- environment variables

HOSTFIT_CACHE = "HOSTFIT_CACHE"  # the artifact cache folder, instead of $XDG_CACHE_HOME/hostfit/models
HOSTFIT_STATE = "HOSTFIT_STATE"  # the folder of the usage store, instead of $XDG_STATE_HOME/hostfit
HOSTFIT_OLLAMA_AUTO_START = "HOSTFIT_OLLAMA_AUTO_START"  # consent to start `ollama serve`
HOSTFIT_BACKOFF_BASE = "HOSTFIT_BACKOFF_BASE"  # seconds before the first download retry (tests shorten it)
HOSTFIT_DOWNLOAD_DEADLINE = "HOSTFIT_DOWNLOAD_DEADLINE"  # seconds for one artifact, all attempts and mirrors
HOSTFIT_MIN_SPEED = "HOSTFIT_MIN_SPEED"  # bytes/s averaged over the stall window; slower is a stall
HOSTFIT_MAX_UNSIZED = "HOSTFIT_MAX_UNSIZED"  # bytes an artifact of unknown size may reach (download.size_ceiling)
HOSTFIT_BUILD_JOBS = "HOSTFIT_BUILD_JOBS"  # worker processes of a large build (1: none; default: one per CPU)
HOST = "HOST"  # this machine's name, instead of the system's host name
OLLAMA_HOST = "OLLAMA_HOST"  # the Ollama server (Ollama's own variable)
HF_ENDPOINT = "HF_ENDPOINT"  # the Hugging Face hub (the hub client's own variable)
OPENROUTER_BASE_URL = "OPENROUTER_BASE_URL"  # the OpenRouter API

# the XDG base directories hostfit uses, with their defaults relative to the home folder
XDG_DEFAULTS = {
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": os.path.join(".local", "share"),
    "XDG_STATE_HOME": os.path.join(".local", "state"),
}

# ------------------------------------------------------------------------------ default URLs

OLLAMA_DEFAULT = "http://127.0.0.1:11434"
HF_DEFAULT = "https://huggingface.co"
HF_RESOLVE = HF_DEFAULT + "/{repo}/resolve/{revision}/{file}"  # an artifact's download URL on the hub
OPENROUTER_DEFAULT = "https://openrouter.ai/api/v1"


def env(name: str) -> str | None:
    """An environment variable's value; unset and empty are the same (None)."""
    return os.environ.get(name) or None


def xdg_home(variable: str) -> Path:
    """An XDG base directory: its variable if that is an absolute path, else the default."""
    value = os.environ.get(variable, "")
    if os.path.isabs(value):
        return Path(value)
    return Path(os.path.expanduser("~")) / XDG_DEFAULTS[variable]


# -------------------------------------------------------------------------------- locations

def artifact_cache() -> Path:
    """Downloaded artifacts and their manifest (`hostfit fetch`, `hostfit cache`)."""
    override = env(HOSTFIT_CACHE)
    return Path(override) if override else xdg_home("XDG_CACHE_HOME") / "hostfit" / "models"


def ingest_cache() -> Path:
    """Cached responses of the model indexes `hostfit ingest` reads."""
    return xdg_home("XDG_CACHE_HOME") / "hostfit" / "ingest"


def schema_cache() -> Path:
    """Compiled schema validators, so a run skips compiling them."""
    return xdg_home("XDG_CACHE_HOME") / "hostfit" / "schemas"


def config_file() -> Path:
    """Personal settings (`ollama: {auto_start: true}`)."""
    return xdg_home("XDG_CONFIG_HOME") / "hostfit" / "config.yaml"


def user_layer() -> Path:
    """The personal catalog layer for a build of this machine."""
    return xdg_home("XDG_CONFIG_HOME") / "hostfit" / "user.yaml"


def installed_catalog() -> Path:
    """Where `hostfit apply` installs models.json and the runtime reader looks first."""
    return xdg_home("XDG_DATA_HOME") / "hostfit" / "models.json"


def usage_db() -> Path:
    """The usage store (compiler/usage.py): calls applications made, measured loads and benchmarks."""
    override = env(HOSTFIT_STATE)
    return (Path(override) if override else xdg_home("XDG_STATE_HOME") / "hostfit") / "usage.sqlite3"


# ------------------------------------------------------------------------------ endpoints

def ollama_host(explicit: str | None = None) -> str:
    """The Ollama server: `explicit`, else OLLAMA_HOST, else the local default; a bare host:port gets http://."""
    host = explicit or env(OLLAMA_HOST) or OLLAMA_DEFAULT
    return host if "://" in host else f"http://{host}"


def hf_endpoint() -> str:
    return (env(HF_ENDPOINT) or HF_DEFAULT).rstrip("/")


def openrouter_base() -> str:
    return (env(OPENROUTER_BASE_URL) or OPENROUTER_DEFAULT).rstrip("/")
