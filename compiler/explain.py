"""Explain: render a host's explain.json for people (selection trace, provenance chains)."""

from __future__ import annotations

import json

from .errors import UsageError, did_you_mean


def render(document: dict, subject: str | None, as_json: bool = False) -> str:
    if subject and subject.startswith("/"):
        found = {p: chain for p, chain in document["provenance"].items()
                 if p == subject or p.startswith(subject.rstrip("/") + "/")}
        if as_json:
            return json.dumps(found, indent=2, sort_keys=True)
        if not found:
            return f"{subject}: no layer sets this value (it is a default or derived at compile time)"
        return "\n".join(_chain(pointer, chain) for pointer, chain in found.items())
    roles = document["roles"]
    if subject and subject in roles:
        return json.dumps(roles[subject], indent=2) if as_json else _role(subject, roles[subject], document)
    if subject:
        prefix = "/models/" + subject.replace("~", "~0").replace("/", "~1")
        found = {p: c for p, c in document["provenance"].items() if p.startswith(prefix + "/")}
        if not found:  # a model with variants: the variants this host uses (ids <model>:<variant>)
            found_variants = _variants(subject, prefix, document)
            if found_variants is None:
                raise UsageError(_unknown(subject, document))
            return found_variants
        users = [name for name, role in roles.items() if role["chosen"] == subject or subject in role["fallbacks"]]
        head = f"model {subject}: used by {', '.join(users) or 'no role'}"
        seen = [c for role in roles.values() for c in role["candidates"] if c["model"] == subject and c.get("type")]
        if seen:
            head += "\n  " + _type(seen[0]).removeprefix("; ")
        return head + "\n" + "\n".join(_chain(p, c) for p, c in found.items())
    if as_json:
        return json.dumps(document, indent=2, sort_keys=True)
    budget = document["budget"]
    gpu = "of it for the GPU (unified memory)" if budget.get("unified") else "VRAM usable"
    lines = [f"host {document['host']}: {budget['ram_mb']:,} MiB RAM usable, {budget['vram_mb']:,} MiB {gpu}"]
    for name, role in roles.items():
        chosen = role["chosen"] or "(none)"
        # the pick's own speed says whether the role's figure was measured
        speed = next((c["speed"] for c in role["candidates"] if c["verdict"] == "chosen" and c.get("speed")), {})
        fast = f", {_tok_s({**speed, 'tokens_per_s': role['tokens_per_s']})}" if role.get("tokens_per_s") else ""
        level = f", {role['fit']}{fast}" if role.get("fit") else ""
        lines.append(f"  {name}: {chosen} [{role['strategy']}{level}, {len(role['candidates'])} candidates]")
    return "\n".join(lines)


def _unknown(subject: str, document: dict) -> str:
    """A subject that is no role, model or pointer of the host: a usage error naming the closest one."""
    roles = document["roles"]
    models = {pointer.split("/")[2].replace("~1", "/").replace("~0", "~")
              for pointer in document["provenance"] if pointer.startswith("/models/")}
    guess = did_you_mean(subject, [*roles, *sorted(models)])
    return (f"{subject!r} is neither a role ({', '.join(sorted(roles))}) nor a model {document['host']} uses, "
            "nor a /json/pointer" + (f"; {guess}" if guess else ""))


def _role(name: str, role: dict, document: dict) -> str:
    takes = f" (takes {', '.join(role['types'])})" if role.get("types") else ""
    lines = [f"role {name} on {document['host']}: workload {role['workload']}{takes}, strategy {role['strategy']}, "
             f"context {role['context']:,}" + (", resident" if role["resident"] else "")
             + (", required" if role["required"] else ""),
             f"  chosen: {role['chosen'] or '(none)'}" + (f" on {role['runtime']}" if role.get("runtime") else ""),
             f"  fallbacks: {', '.join(role['fallbacks']) or '(none)'}"]
    if role.get("offload"):
        lines.append(f"  offload: {role['offload']['why']}")
    picked = next((c for c in role["candidates"] if c["verdict"] == "chosen"), None)
    if picked and picked.get("speed"):
        lines.append(f"  fit: {picked['fit']}; speed: {_speed(picked['speed'])}")
    if role.get("note"):
        lines.append(f"  note: {role['note']}")
    lines.append("  candidates, in order:")
    for c in role["candidates"]:
        numbers = ""
        if c.get("memory"):
            numbers = _memory(c["memory"])
        runtime = f" on {c['runtime']}" if c.get("runtime") and c["verdict"] != "rejected" else ""
        fast = f" {_tok_s(c['speed'])}" if c.get("speed") else ""
        lines.append(f"    {c['verdict']:<9} {c['model']}: {c['reason']}{numbers}{runtime}{fast}{_type(c)}")
    if role.get("omitted_candidates"):
        lines.append(f"    ... and {role['omitted_candidates']} more candidates")
    return "\n".join(lines)


def _variants(subject: str, prefix: str, document: dict) -> str | None:
    """A model declaring variants: each of its variants the roles judged, per role, with its verdict."""
    lines = []
    for name, role in document["roles"].items():
        judged = [c for c in role["candidates"] if c["model"].startswith(subject + ":")]
        if judged:
            lines.append(f"  role {name}:")
            lines += [f"    {c['verdict']:<9} {c['model']}: {c['reason']}"
                      + (f" {_tok_s(c['speed'])}" if c.get("speed") else "") for c in judged]
    if not lines and not any(p.startswith(prefix + ":") for p in document["provenance"]):
        return None
    return f"model {subject}: variants judged on {document['host']}\n" + "\n".join(lines)


def _type(candidate: dict) -> str:
    if not candidate.get("type"):  # an explain.json written before model types
        return ""
    return f"; type: {candidate['type']}{' (default)' if candidate.get('type_default') else ''}"


def _memory(m: dict) -> str:
    """The need and how it was reached: the estimate's parts and, when there is one, the declaration."""
    if m["method"] == "cloud":
        return f" [{m['mb']:,} MiB: cloud]"
    estimated = m["weights_mb"] + m["kv_mb"] + m["overhead_mb"]
    kv = m["kv_method"] + (f", {m['kv_cache_type']}" if m.get("kv_cache_type") else "")  # absent: f16
    parts = (f"weights {m['weights_mb']:,} + kv {m['kv_mb']:,} ({kv}) + overhead {m['overhead_mb']:,}"
             f" at {m['context']:,} tokens")
    if m["method"] == "measured":
        scaled = (f", {m['mb'] - m['measured_mb']:+,} for {m['context']:,} tokens"
                  if m["measured_context"] != m["context"] else "")
        return (f" [{m['mb']:,} MiB: measured {m['measured_mb']:,} at {m['measured_context']:,} tokens{scaled};"
                f" the estimate was {estimated:,} = {parts}]")
    if not m.get("declared_mb"):
        return f" [{m['mb']:,} MiB: {m['method']}, {parts}]"
    if m["method"] == "declared":
        return f" [{m['mb']:,} MiB: declared {m['declared_mb']:,} wins over the estimate {estimated:,} = {parts}]"
    return (f" [{m['mb']:,} MiB: {m['method']} {estimated:,} = {parts}; wins over the declared "
            f"{m['declared_mb']:,}]")


def _tok_s(s: dict) -> str:
    """A decode speed: a measured one shown as measured, an estimate as about."""
    return f"{'measured ' if s.get('method') == 'measured' else '~'}{s['tokens_per_s']:g} tok/s"


def _speed(s: dict) -> str:
    """An estimated decode speed and its arithmetic (compiler/speed.py)."""
    read = (f"{s['bytes_per_token'] / 1e9:.2f} GB read per token ({s['weights_bytes'] / 1e9:.2f} GB weights: "
            f"{s['active_params_b']:g}B active x {s['bits_per_weight']:g} bits; {s['kv_bytes'] / 1e9:.2f} GB KV)")
    parts = []
    if s["gpu_share"]:
        parts.append(f"{s['gpu_share']:.0%} from GPU at {s['gpu_gbs']:g} GB/s x {s['gpu_efficiency']:g}")
    if s["gpu_share"] < 1:
        parts.append(f"{1 - s['gpu_share']:.0%} from RAM at {s['ram_gbs']:g} GB/s x {s['cpu_efficiency']:g}")
    estimate = f"{read}, " + " + ".join(parts) + f" [{s['bandwidth']}]"
    if s.get("method") == "measured":
        return (f"{s['tokens_per_s']:g} tok/s measured ({s['measured_tokens_per_s']:g} at "
                f"{s['measured_context']:,} tokens); the estimate was ~{s['estimated_tokens_per_s']:g}: {estimate}")
    return f"~{s['tokens_per_s']:g} tok/s: {estimate}"


def _chain(pointer: str, chain: list[dict]) -> str:
    lines = [pointer]
    for index, step in enumerate(chain):
        last = index == len(chain) - 1
        value = json.dumps(step["value"]) if step["action"] == "set" else step["action"]
        marker = "=>" if last else "  "
        lines.append(f"  {marker} {step['file']}:{step['line']}:{step['col']} ({step['layer']}): {value}")
    return "\n".join(lines)
