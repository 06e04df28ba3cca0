"""The shipped catalog: every declared host's compiled output, reviewed as snapshots, and the
committed out/ kept equal to it."""

from __future__ import annotations

import pytest

from compiler.pipeline import BuildOptions, Project

from conftest import REPO


@pytest.fixture(scope="module")
def shipped():
    report = Project(REPO).compile(BuildOptions(all_hosts=True), write=False)
    assert report.ok, report.errors
    return {result.host.name: result for result in report.results}


def test_at_least_five_hosts_from_4_to_64_gib(shipped):
    sizes = sorted(result.host.ram_mb // 1024 for result in shipped.values())
    assert len(sizes) >= 5 and sizes[0] == 4 and sizes[-1] == 64
    assert any(result.host.gpus for result in shipped.values())


@pytest.mark.parametrize("host", ["edge-4", "laptop-8", "laptop-16", "laptop-32", "workstation"])
def test_compiled_output(shipped, host, snapshot):
    assert shipped[host].models_bytes.decode() == snapshot


def test_committed_out_is_current(shipped):
    for name, result in shipped.items():
        committed = REPO / "out" / name / "models.json"
        assert committed.read_bytes() == result.models_bytes, f"{committed} is stale: run make build-all"


def test_small_box_serves_chat_and_leaves_big_roles_empty(shipped):
    roles = shipped["edge-4"].output["roles"]
    assert roles["chat"]["model"] is not None
    assert roles["planner"]["model"] is None and roles["planner"]["required"] is False
    assert roles["planner"]["fallbacks"] == ["gpt-4o-mini"]


def test_workstation_packs_its_resident_roles(shipped):
    result = shipped["workstation"]
    roles = result.output["roles"]
    assert roles["planner"]["model"] == "gpt-oss-120b" and roles["planner"]["placement"] == "split"
    assert roles["critic"]["resident"] and roles["critic"]["model"] is not None
    resident = {roles[r]["model"]: roles[r]["memory_mb"] for r in ("planner", "critic")}
    assert sum(resident.values()) <= result.plan.budget.ram_mb + result.plan.budget.vram_mb
