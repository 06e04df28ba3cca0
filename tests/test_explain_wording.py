"""`hostfit explain`'s summary words a role's speed as the candidate lines do: measured, or about (~)."""

from __future__ import annotations

from compiler import explain


def document(speed: dict | None, tokens_per_s: float | None, fit: str | None = "comfortable") -> dict:
    chosen = {"model": "m", "verdict": "chosen", "reason": "best fit", **({"speed": speed} if speed else {})}
    return {"host": "box", "budget": {"ram_mb": 8192, "vram_mb": 0}, "provenance": {},
            "roles": {"chat": {"chosen": "m", "strategy": "best_fit", "fit": fit, "tokens_per_s": tokens_per_s,
                               "fallbacks": [], "candidates": [chosen]}}}


def test_a_measured_role_speed_is_not_shown_as_an_estimate():
    text = explain.render(document({"method": "measured", "tokens_per_s": 12.0}, 12.0), None)
    assert "  chat: m [best_fit, comfortable, measured 12 tok/s, 1 candidates]" in text


def test_an_estimated_role_speed_is_about():
    text = explain.render(document({"method": "estimated", "tokens_per_s": 9.5}, 9.5), None)
    assert "  chat: m [best_fit, comfortable, ~9.5 tok/s, 1 candidates]" in text


def test_a_role_with_a_fit_and_no_speed_is_summarized_without_one():
    text = explain.render(document(None, None), None)
    assert "  chat: m [best_fit, comfortable, 1 candidates]" in text
