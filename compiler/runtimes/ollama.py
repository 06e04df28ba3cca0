"""Ollama: GGUF models by their Ollama name, served by the Ollama server at OLLAMA_HOST."""

from __future__ import annotations

from .base import Runtime

PROBE_SECONDS = 1.0  # detection asks once, briefly: a build must not wait on a missing server
PROBE_BYTES = 4096


def detect(hardware: frozenset) -> bool:
    """An Ollama server answers /api/version at OLLAMA_HOST (loopback by default)."""
    import httpx

    from ..discover.ollama import base_url
    from ..errors import UsageError
    from ..net import Deadline, LimitExceeded, request

    try:
        with httpx.Client(base_url=base_url()) as client:
            response, _ = request(client, "GET", "/api/version", Deadline(PROBE_SECONDS), PROBE_BYTES,
                                  "ollama /api/version")
    except (httpx.HTTPError, LimitExceeded, UsageError):  # unreachable or unusable: not here
        return False
    return response.status_code == 200


RUNTIME = Runtime(
    name="ollama",
    title="Ollama",
    loads={"gguf": ("plain",)},
    hardware=("cpu", "cuda", "rocm", "metal"),
    placements=("gpu", "split", "cpu"),
    detect=detect,
    sources=("ollama",),  # `hostfit load` pulls by ollama.name; a bare GGUF file needs the Modelfile export
    loader="ollama",
    exports=("ollama",),
    offload=True,
)
