"""Every file a command writes where the user says (`bundle -o`, `import -o`, `migrate --backup`) goes
through one atomic writer: a fresh mkstemp temporary (never a planted link) renamed over an output that
must be missing or a regular file (E025, exit 2). Also the command-line checks of REVIEW 9."""

from __future__ import annotations

import os

import pytest

from conftest import REPO, run_cli
from test_apply import data_home  # noqa: F401 - autouse fixture: data home and cache under tmp_path
from test_fetch import compiled, server  # noqa: F401 - fixture

REALDATA = REPO / "tests" / "data"


def test_bundle_never_writes_through_a_planted_temporary_link(base_catalog, server, tmp_path):  # noqa: F811
    """The old bundle wrote `.<name>.tmp` with tarfile.open, which follows a link planted there."""
    catalog = compiled(base_catalog, server)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    output = tmp_path / "box-8.tar"
    (tmp_path / ".box-8.tar.tmp").symlink_to(victim)
    result = run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(output))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert output.is_file() and not output.is_symlink() and output.stat().st_size > 1024


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_bundle_refuses_an_output_that_is_not_a_regular_file(base_catalog, server, tmp_path, kind):  # noqa: F811
    """A rename over the output replaced a FIFO (and, as root, `/dev/full`) with a tar."""
    catalog = compiled(base_catalog, server)
    output = tmp_path / "out.tar"
    victim = tmp_path / "victim.txt"
    if kind == "fifo":
        os.mkfifo(output)
    else:
        victim.write_text("precious\n")
        output.symlink_to(victim)
    server.log.clear()
    result = run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(output))
    assert result.exit_code == 2 and "E025" in result.stderr and "Traceback" not in result.output
    assert (output.is_fifo() if kind == "fifo" else output.is_symlink() and victim.read_text() == "precious\n")
    assert server.log == [], "refused before anything was downloaded"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_import_refuses_an_output_that_is_not_a_regular_file(tmp_path):
    """`import -o` replaced a device node through its rename; a FIFO takes the same path (a test must not
    risk a real device)."""
    output = tmp_path / "layer.yaml"
    os.mkfifo(output)
    result = run_cli("import", "gpt4all", str(REALDATA / "models3.json"), "-o", str(output))
    assert result.exit_code == 2 and "E025" in result.stderr and output.is_fifo()


def test_import_replaces_a_regular_output_and_keeps_its_mode(tmp_path):
    output = tmp_path / "layer.yaml"
    output.write_text("old\n")
    output.chmod(0o640)
    result = run_cli("import", "gpt4all", str(REALDATA / "models3.json"), "-o", str(output))
    assert result.exit_code == 0, result.output
    assert output.read_text().startswith("# Imported by") and output.stat().st_mode & 0o777 == 0o640


def test_migrate_backup_never_writes_through_a_planted_link(base_catalog, tmp_path):
    from test_migrate import V1

    catalog = base_catalog
    (catalog / "sources" / "05-legacy.yaml").write_bytes(V1.read_bytes())
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (catalog / "sources" / "05-legacy.yaml.bak").symlink_to(victim)
    result = run_cli("-C", str(catalog), "migrate", "--write", "--backup")
    assert victim.read_text() == "precious\n"
    assert result.exit_code == 2 and "E025" in result.stderr
