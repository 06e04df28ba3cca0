"""Discovery and ingestion: what is installed on a host (Ollama), what the ecosystem offers
(Hugging Face, OpenRouter, a curated list), turned into catalog layers and staged candidates.
Every source that is missing, slow or malformed yields nothing and a warning, never a failure."""


def text(value) -> str | None:
    """A non-blank string that can be written out (a lone surrogate, JSON's "\\ud800", cannot);
    None for anything else a server may send in its place."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value
