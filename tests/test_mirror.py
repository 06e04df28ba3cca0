"""The team mirror (`hostfit mirror`, `mirrors:` in hosts.yaml and config.yaml) and `hostfit lock` from a
server's metadata, against servers on 127.0.0.1: what each server was asked is asserted from its log."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from compiler.executor import fetch as fetcher
from compiler.validate import plain_http_to, url_problem

from conftest import add_layer, run_cli
from httpserver import FileServer
from loopback import LoopbackServer
from test_filesets import catalog_with

BLOB = b"GGUF" + bytes((i * 13 + i // 253) % 256 for i in range(2 * 1024 * 1024 + 777))
SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetcher, "_MIRRORS_DOWN", {})  # a port found down by one test may serve the next


@pytest.fixture
def origin():
    srv = FileServer().start()
    srv.files["tiny.gguf"] = BLOB
    yield srv
    srv.stop()


class StaticServer(LoopbackServer):
    """A plain static file server (Python's own, as any web server would be) serving one folder."""

    def __init__(self, folder: Path):
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass
        super().__init__(functools.partial(Quiet, directory=str(folder)))


def build(catalog: Path, url: str, sha: str | None = SHA, host_mirrors: list[str] | None = None) -> None:
    artifact = {"url": url, "file": "tiny.gguf", "size_bytes": len(BLOB), **({"sha256": sha} if sha else {})}
    add_layer(catalog, "20-served.yaml", "models:\n  small-chat:\n    artifact: " + json.dumps(artifact) + "\n"
              "roles:\n  chat: {prefer: [small-chat]}\n")
    if host_mirrors is not None:
        hosts = catalog / "sources" / "hosts.yaml"
        hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8,",
                                                   f"box-8: {{ram_gb: 8, mirrors: {json.dumps(host_mirrors)},"))
    result = run_cli("-C", str(catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output


def config_mirrors(tmp_path: Path, *urls: str) -> None:
    path = tmp_path / "xdg-config" / "hostfit" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mirrors: " + json.dumps(list(urls)) + "\n")


def cached_sha(tmp_path: Path) -> str:
    return hashlib.sha256((tmp_path / "cache" / "small-chat" / "tiny.gguf").read_bytes()).hexdigest()


def gets(server: FileServer) -> list[dict]:
    return [entry for entry in server.log if entry.get("method") != "HEAD"]


def test_mirror_fills_a_content_addressed_folder_once(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    folder = tmp_path / "mirror"
    result = run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert (folder / "sha256" / SHA).read_bytes() == BLOB
    index = json.loads((folder / "index.json").read_text())
    assert index["files"][SHA]["size"] == len(BLOB)
    assert {use["model"] for use in index["files"][SHA]["uses"]} == {"small-chat"}
    assert [e["status"] for e in gets(origin)] == [200]
    # idempotent: a verified file already there is skipped without asking the origin
    again = run_cli("-C", str(base_catalog), "mirror", str(folder), "--all")
    assert again.exit_code == 0, again.output
    assert "1 already present, 0 copied from the cache, 0 downloaded" in again.stderr and len(gets(origin)) == 1
    # a file changed in the mirror is caught by its sha256 and replaced
    (folder / "sha256" / SHA).write_bytes(BLOB[:-1] + b"x")
    repaired = run_cli("-C", str(base_catalog), "mirror", str(folder), "--all")
    assert repaired.exit_code == 0 and "1 downloaded" in repaired.stderr
    assert (folder / "sha256" / SHA).read_bytes() == BLOB


def test_mirror_copies_verified_files_from_this_machines_cache(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    assert run_cli("-C", str(base_catalog), "fetch", "--host", "box-8").exit_code == 0
    origin.stop()  # whatever the mirror gets now comes from the cache
    folder = tmp_path / "mirror"
    result = run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8")
    assert result.exit_code == 0 and "1 copied from the cache" in result.stderr, result.output
    assert (folder / "sha256" / SHA).read_bytes() == BLOB
    # a cached copy whose bytes changed since verified is not taken: with the origin gone, that file fails
    (folder / "sha256" / SHA).unlink()
    (tmp_path / "cache" / "small-chat" / "tiny.gguf").write_bytes(BLOB[:-1] + b"y")
    again = run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8")
    assert again.exit_code == 3 and "1 failed" in again.stderr
    assert not (folder / "sha256" / SHA).exists() and list((folder / ".hostfit-mirror").glob("*.part")) == []


def test_mirror_refuses_a_folder_it_did_not_make(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8")
    assert result.exit_code == 2 and "not a hostfit mirror" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_unpinned_files_are_not_mirrored_with_a_warning(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"), sha=None)
    folder = tmp_path / "mirror"
    result = run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8")
    assert result.exit_code == 0 and "W820" in result.stderr and "box-8: small-chat tiny.gguf" in result.stderr
    assert list((folder / "sha256").iterdir()) == [] and gets(origin) == []


def test_fetch_from_the_mirror_while_the_origin_is_unreachable(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    folder = tmp_path / "mirror"
    assert run_cli("-C", str(base_catalog), "mirror", str(folder), "--host", "box-8").exit_code == 0
    origin.stop()  # nothing listens on the origin's port any more
    static = StaticServer(folder).start()
    try:
        build(base_catalog, origin.url("tiny.gguf"), host_mirrors=[static.base + "/"])
        compiled = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
        assert compiled["host"]["mirrors"] == [static.base + "/"]
        result = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
        assert result.exit_code == 0, result.output
        assert cached_sha(tmp_path) == SHA
        lock = json.loads((base_catalog / "out" / "box-8" / "models.lock").read_text())
        assert lock["artifacts"]["small-chat"]["final_url"] == f"{static.base}/sha256/{SHA}"
        assert lock["artifacts"]["small-chat"]["url"] == origin.url("tiny.gguf")  # the pin names the origin
    finally:
        static.stop()


README = Path(__file__).resolve().parent.parent / "README.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin"),
                    reason="nginx is not installed")
def test_nginx_serves_the_mirror_with_the_readmes_configuration(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    folder = tmp_path / "mirror"
    assert run_cli("-C", str(base_catalog), "mirror", str(folder), "--all").exit_code == 0
    origin.stop()
    snippet = re.search(r"```nginx\n(.*?)```", README.read_text(), re.S).group(1)
    port = free_port()
    server = snippet.replace("listen 80;", f"listen 127.0.0.1:{port};").replace("/srv/hostfit-mirror/", f"{folder}/")
    temp = tmp_path / "nginx"
    temp.mkdir()
    conf = temp / "nginx.conf"
    conf.write_text(f"daemon off; master_process off; pid {temp}/nginx.pid; error_log {temp}/error.log;\n"
                    f"events {{}}\nhttp {{\n access_log {temp}/access.log;\n"
                    + "".join(f" {kind}_temp_path {temp};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
                    + server + "}\n")
    nginx = subprocess.Popen([shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin"), "-c", str(conf),
                              "-p", str(temp)], stderr=subprocess.PIPE)
    try:
        for _ in range(100):  # bounded: 5 s for nginx to listen
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/hostfit/"
        with pytest.raises(urllib.error.HTTPError) as denied:  # the mirror's own state is not served
            urllib.request.urlopen(base + ".hostfit-mirror/seen.json", timeout=5)
        assert denied.value.code == 403
        build(base_catalog, origin.url("tiny.gguf"), host_mirrors=[base])
        result = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
        assert result.exit_code == 0, result.output
        assert cached_sha(tmp_path) == SHA
        assert f"GET /hostfit/sha256/{SHA} HTTP/1.1\" 200" in (temp / "access.log").read_text()
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def test_a_mirror_serving_a_wrong_file_is_caught_and_the_next_source_tried(base_catalog, origin, tmp_path):
    bad, good = FileServer().start(), FileServer().start()
    try:
        bad.files[f"sha256/{SHA}"] = BLOB
        bad.faults["wrong"] = True  # same size, same magic bytes, other content
        good.files[f"sha256/{SHA}"] = BLOB
        build(base_catalog, origin.url("tiny.gguf"))
        config_mirrors(tmp_path, bad.base, good.base)
        result = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
        assert result.exit_code == 0, result.output
        assert "mirror failed" in result.stderr and "sha256" in result.stderr
        assert cached_sha(tmp_path) == SHA
        assert [e["path"] for e in bad.log] == [f"/sha256/{SHA}"] and [e["status"] for e in good.log] == [200]
        assert origin.log == []  # the second mirror served it
        # with every mirror wrong, the origin comes next
        good.faults["wrong"] = True
        (tmp_path / "cache" / "small-chat" / "tiny.gguf").unlink()
        again = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
        assert again.exit_code == 0, again.output
        assert cached_sha(tmp_path) == SHA and [e["status"] for e in origin.log] == [200]
    finally:
        bad.stop()
        good.stop()


def test_a_mirror_that_accepts_no_connections_is_not_asked_again_in_the_run(base_catalog, origin, tmp_path):
    shards = {"set-00001-of-00002.gguf": BLOB, "set-00002-of-00002.gguf": b"GGUF" + BLOB[:-4][::-1]}
    origin.files.update(shards)
    files = [{"name": name, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for name, data in shards.items()]
    catalog_with(base_catalog, origin, files, model="split-chat")
    config_mirrors(tmp_path, f"http://127.0.0.1:{free_port()}/")  # nothing listens there
    result = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
    assert result.exit_code == 0, result.output
    # the first shard found it down; the second went straight to the origin
    assert result.stderr.count("mirror failed") == 1 and result.stderr.count("does not accept connections") == 1
    assert sorted(e["path"] for e in gets(origin)) == ["/" + name for name in sorted(shards)]
    for name, data in shards.items():
        assert (tmp_path / "cache" / "split-chat" / name).read_bytes() == data


def test_a_mirror_is_asked_only_for_files_whose_sha256_is_known(base_catalog, origin, tmp_path):
    mirror = FileServer().start()
    try:
        build(base_catalog, origin.url("tiny.gguf"), sha=None)
        config_mirrors(tmp_path, mirror.base)
        assert run_cli("-C", str(base_catalog), "fetch", "--host", "box-8").exit_code == 0
        assert mirror.log == [] and cached_sha(tmp_path) == SHA
    finally:
        mirror.stop()


def test_plain_http_only_to_the_configured_mirrors():
    assert url_problem("http://cache.lan/hostfit/sha256/" + SHA)
    with plain_http_to(["http://cache.lan/hostfit/"]):
        assert url_problem("http://cache.lan/hostfit/sha256/" + SHA) is None
        assert url_problem("http://elsewhere.lan/x.gguf")
    assert url_problem("http://cache.lan/hostfit/sha256/" + SHA)


@pytest.mark.parametrize("sha", [SHA, None])
def test_plain_http_to_a_team_mirror_only_while_that_mirror_is_asked(monkeypatch, tmp_path, sha):
    """The origin's download (and any redirect it makes) keeps the https rule: an unverified file (no sha256)
    must never arrive over plain http from a team mirror's host."""
    from compiler.errors import DownloadError
    from compiler.executor.cache import Cache

    asked = []

    def fake_download(urls, *args, **kwargs):
        asked.append((urls[0], url_problem("http://cache.lan/hostfit/redirected.gguf")))
        if urls[0].startswith("http://cache.lan/"):
            raise DownloadError("the mirror is down")
        return "downloaded"
    monkeypatch.setattr(fetcher, "download", fake_download)
    monkeypatch.setattr(fetcher, "_accepts_connections", lambda base: True)
    spec = fetcher.File("tiny.gguf", "https://origin.example/tiny.gguf", size=len(BLOB), sha256=sha)
    artifact = fetcher.Artifact("small-chat", (spec,), team_mirrors=("http://cache.lan/hostfit/",))
    cache = Cache(tmp_path / "cache")
    part = cache.part_path("small-chat", "tiny.gguf")
    assert fetcher._download_from_sources(artifact, spec, cache, part, cache.artifact_path("small-chat", "tiny.gguf"),
                                          len(BLOB), sha, None, fetcher.Reporter("json"), None) == "downloaded"
    origin = [problem for url, problem in asked if url == spec.url]
    assert len(origin) == 1 and origin[0], "plain http to the mirror's host is refused for the origin's download"
    assert [problem for url, problem in asked if url != spec.url] == ([None] if sha else [])


def test_a_mirror_url_that_is_not_http_is_refused_by_the_config_schema(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"))
    config_mirrors(tmp_path, "ftp://cache.lan/hostfit/")
    result = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8")
    assert result.exit_code == 1 and "config.yaml" in result.stderr and origin.log == []


# ------------------------------------------------------------------------------------ lock from metadata

GB = 1_000_000_000


def three_big(catalog: Path, server: FileServer) -> dict[str, str]:
    """Three 1 GB artifacts (declared size, no sha256), one per role; {model id: the sha256 the hub publishes}."""
    models, roles, shas = [], [], {}
    for name, workload in (("big-a", "code"), ("big-b", "extraction"), ("big-c", "creative")):
        shas[name] = hashlib.sha256(name.encode()).hexdigest()  # published, never computed from bytes: none exist
        server.hub[f"{name}.gguf"] = {"size": GB, "sha256": shas[name], "commit": "c" * 40,
                                      "location": f"https://cdn.example.invalid/{name}"}
        artifact = {"format": "gguf", "url": server.url(f"{name}.gguf"), "file": f"{name}.gguf", "size_bytes": GB}
        models.append(f"  {name}:\n    params_b: 1.0\n    quantization: Q4_K_M\n    context_window: 8192\n"
                      f"    provider: local\n    workloads: [{workload}]\n    arch: {{layers: 16, kv_heads: 8, head_dim: 64}}\n"
                      f"    artifact: {json.dumps(artifact)}\n")
        roles.append(f"  role-{name}: {{workload: {workload}, prefer: [{name}], required: true}}\n")
    (catalog / "sources" / "10-roles.yaml").unlink()  # its roles' models name the public hub: only these three
    add_layer(catalog, "30-big.yaml", "models:\n" + "".join(models) + "roles:\n" + "".join(roles))
    result = run_cli("-C", str(catalog), "build", "--host", "box-32")
    assert result.exit_code == 0, result.output
    return shas


def test_lock_pins_from_the_hubs_metadata_without_downloading(base_catalog, origin, tmp_path):
    shas = three_big(base_catalog, origin)
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-32")
    assert result.exit_code == 0, result.output
    pins = json.loads((base_catalog / "out" / "box-32" / "models.lock").read_text())["artifacts"]
    assert {name: (pins[name]["size"], pins[name]["sha256"]) for name in shas} == \
        {name: (GB, sha) for name, sha in shas.items()}
    assert gets(origin) == []  # no body was asked for
    assert sorted(e["path"] for e in origin.log) == ["/big-a.gguf", "/big-b.gguf", "/big-c.gguf"]
    assert not (tmp_path / "cache" / "big-a").exists()


def test_lock_follows_a_relative_redirect_to_the_metadata(base_catalog, origin, tmp_path):
    shas = three_big(base_catalog, origin)
    origin.moved["big-a.gguf"] = "/renamed/big-a.gguf"
    origin.hub["renamed/big-a.gguf"] = origin.hub.pop("big-a.gguf")
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-32")
    assert result.exit_code == 0, result.output
    pins = json.loads((base_catalog / "out" / "box-32" / "models.lock").read_text())["artifacts"]
    assert pins["big-a"]["sha256"] == shas["big-a"] and gets(origin) == []


def test_metadata_contradicting_the_catalog_size_exits_3(base_catalog, origin, tmp_path):
    three_big(base_catalog, origin)
    origin.hub["big-b.gguf"]["size"] = GB + 1
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-32")
    assert result.exit_code == 3 and "publishes 1,000,000,001 bytes" in result.stderr
    assert gets(origin) == []


def test_lock_without_metadata_falls_back_to_downloading(base_catalog, origin, tmp_path):
    build(base_catalog, origin.url("tiny.gguf"), sha=None)  # a plain server: HEAD has no X-Linked-* headers
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-8")
    assert result.exit_code == 0, result.output
    pin = json.loads((base_catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]["small-chat"]
    assert (pin["size"], pin["sha256"]) == (len(BLOB), SHA)
    assert [e.get("method") for e in origin.log] == ["HEAD", None] and gets(origin)[0]["status"] == 200
