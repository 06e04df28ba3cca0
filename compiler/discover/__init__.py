"""Discovery and ingestion: what is installed on a host (Ollama), what the ecosystem offers
(Hugging Face, OpenRouter, a curated list), turned into catalog layers and staged candidates.
Every source that is missing, slow or malformed yields nothing and a warning, never a failure."""
