"""The LiteLLM export against the real LiteLLM proxy: it starts on 127.0.0.1 with the export as its config
and the master key the export names, and lists every model name the export declares."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import run_cli

STARTUP_S = 120  # measured ~17 s on 2 busy cores; the bound only stops a proxy that never comes up
KEY = "sk-hostfit-test"  # LiteLLM wants a master key that begins with sk-


def _litellm() -> str | None:
    beside = Path(sys.executable).parent / "litellm"  # the test venv's own, else one on PATH
    return str(beside) if beside.is_file() else shutil.which("litellm")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def proxy(shipped_catalog: Path, tmp_path: Path):
    """The proxy serving the workstation's compiled export; yields (base URL, the export's model names)."""
    binary = _litellm()
    if binary is None:
        print("skipped: the LiteLLM proxy is not installed (pip install 'litellm[proxy]', in the test extra)")
        pytest.skip("the LiteLLM proxy (litellm[proxy], in the test extra) is not installed")
    assert run_cli("-C", str(shipped_catalog), "build", "--host", "workstation").exit_code == 0
    config = shipped_catalog / "out" / "workstation" / "exports" / "litellm-config.yaml"
    names = {entry["model_name"] for entry in yaml.safe_load(config.read_text())["model_list"]}
    port = _free_port()
    # a private HOME and the cost map bundled with LiteLLM: nothing is fetched or written outside tmp_path
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"), "LITELLM_MASTER_KEY": KEY,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "NO_PROXY": "*"}
    log = (tmp_path / "proxy.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen([binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                assert process.poll() is None, (tmp_path / "proxy.log").read_text()[-3000:]
                assert time.monotonic() - started < STARTUP_S, "the proxy did not come up in time"
                try:
                    if client.get(f"{base}/health/liveliness").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        print(f"LiteLLM proxy up in {time.monotonic() - started:.1f} s")
        yield base, names
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the proxy and the workers it started, no more
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


def test_the_proxy_starts_from_the_export_and_lists_every_model(proxy):
    base, names = proxy
    with httpx.Client(trust_env=False, timeout=30) as client:
        listed = client.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert listed.status_code == 200, listed.text[:500]
        served = {model["id"] for model in listed.json()["data"]}
        assert names and names <= served, sorted(names - served)
        anonymous = client.get(f"{base}/v1/models")
        assert anonymous.status_code != 200, "the master key the export names guards the proxy"


def test_the_export_names_the_master_key_and_says_to_set_it(shipped_catalog: Path):
    """LiteLLM refuses to start with no master key (UnsafeMasterKeyError): the export names the variable
    it reads the key from, never a key, and its header says to set it."""
    assert run_cli("-C", str(shipped_catalog), "build", "--all").exit_code == 0
    for config in sorted((shipped_catalog / "out").glob("*/exports/litellm-config.yaml")):
        text = config.read_text()
        assert yaml.safe_load(text)["general_settings"] == {"master_key": "os.environ/LITELLM_MASTER_KEY"}
        header = text.split("\nmodel_list:")[0]
        assert "LITELLM_MASTER_KEY=" in header and "litellm --config litellm-config.yaml" in header, header
