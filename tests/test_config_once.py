"""A command reads config.yaml once: the size limit, the team mirrors and the E721 message share one read."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.executor import config
from test_fetch import compiled, fetch, server  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def homes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))


def test_a_fetch_of_cached_artifacts_reads_the_configuration_once(base_catalog, server, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    settings = tmp_path / "config" / "hostfit" / "config.yaml"
    settings.parent.mkdir(parents=True)
    settings.write_text("cache:\n  max_size: 2G\nmirrors: []\n")
    catalog = compiled(base_catalog, server)
    assert fetch(catalog).exit_code == 0  # downloads: the download settings are read where it happens
    reads: list[Path | None] = []
    real = config.document

    def counting(path=None):
        reads.append(path)
        return real(path)
    monkeypatch.setattr(config, "document", counting)
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert len(server.log) == 1, "the second fetch found it cached"
    assert len(reads) == 1, f"config.yaml read {len(reads)} times"
