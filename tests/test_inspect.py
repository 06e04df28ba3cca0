"""`hostfit inspect`: GGUF header facts from a local file or over HTTP Range requests, never the data.

The GGUFs are written with gguf's GGUFWriter with real geometry in their keys (a Qwen2.5-0.5B-like
header with its 151,936-token vocabulary, a gpt-oss-like mixture of experts with a sliding window)
and small tensors of several ggml types; the parameter counts asserted are exactly what was written.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from conftest import run_cli
from httpserver import FileServer

from compiler import gguf_header

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

MB100 = 100_000_000


def write_gguf(path: Path, arch: str, keys: dict, vocab: int, tensors: dict, file_type: int) -> Path:
    """A GGUF with `keys` under `arch.`, `vocab` tokens and `tensors` (name -> (array, raw ggml type))."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"hostfit test {arch}")
    for key, value in keys.items():
        if isinstance(value, int):
            writer.add_uint32(f"{arch}.{key}", value)
        else:
            writer.add_float32(f"{arch}.{key}", value)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    for name, (array, raw) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def q8_0(rows: int, cols: int):
    """A zero Q8_0 tensor of rows x cols elements, given as its raw bytes (34 bytes per 32 elements)."""
    return np.zeros((rows, cols // 32 * 34), dtype=np.uint8), gguf.GGMLQuantizationType.Q8_0


QWEN = {"context_length": 32768, "embedding_length": 896, "block_count": 24, "feed_forward_length": 4864,
        "attention.head_count": 14, "attention.head_count_kv": 2, "rope.freq_base": 1000000.0}


def qwen_tensors() -> dict:
    tensors = {"token_embd.weight": (np.zeros((16, 896), dtype=np.float16), None),
               "output_norm.weight": (np.ones(896, dtype=np.float32), None)}
    for layer in range(24):
        tensors[f"blk.{layer}.attn_norm.weight"] = (np.ones(896, dtype=np.float32), None)
        tensors[f"blk.{layer}.attn_k.bias"] = (np.zeros(128, dtype=np.float32), None)
        tensors[f"blk.{layer}.attn_k.weight"] = q8_0(128, 896)  # 2 KV heads x 64 by 896, as in the model
    return tensors


# what qwen_tensors() holds, counted by hand
QWEN_TYPES = {"Q8_0": {"tensors": 24, "parameters": 24 * 128 * 896, "bytes": 24 * 128 * 896 // 32 * 34},
              "F32": {"tensors": 49, "parameters": 896 + 24 * (896 + 128), "bytes": 4 * (896 + 24 * (896 + 128))},
              "F16": {"tensors": 1, "parameters": 16 * 896, "bytes": 2 * 16 * 896}}
QWEN_PARAMETERS = sum(entry["parameters"] for entry in QWEN_TYPES.values())


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "qwen2.5-0.5b-like.gguf"
    return write_gguf(path, "qwen2", QWEN, 151936, qwen_tensors(), 7)


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    """A 100 MB file: a Llama-2-like header (32,000 tokens) and one large final I8 tensor."""
    path = tmp_path_factory.mktemp("gguf") / "llama-padded.gguf"
    keys = {"context_length": 4096, "embedding_length": 4096, "block_count": 32, "attention.head_count": 32,
            "attention.head_count_kv": 32}
    tensors = {"output_norm.weight": (np.ones(4096, dtype=np.float32), None),
               "pad.weight": (np.zeros(MB100, dtype=np.int8), None)}
    return write_gguf(path, "llama", keys, 32000, tensors, 0)


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()


def inspect_json(target: str):
    result = run_cli("inspect", target, "--json")
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def test_a_local_qwen_like_file_reports_every_fact(qwen: Path):
    result, facts = inspect_json(str(qwen))
    assert result.exit_code == 0, result.output
    assert facts["architecture"] == "qwen2" and facts["name"] == "hostfit test qwen2"
    assert facts["parameters"] == QWEN_PARAMETERS == 2_792_320
    assert facts["tensor_types"] == QWEN_TYPES
    assert facts["file_type"] == "Q8_0" and facts["tensor_count"] == 74 and facts["gguf_version"] == 3
    assert (facts["context_length"], facts["block_count"], facts["embedding_length"]) == (32768, 24, 896)
    assert (facts["head_count"], facts["head_count_kv"], facts["head_dim"]) == (14, 2, 64)  # 896 / 14
    assert facts["vocab_size"] == 151936
    assert facts["sliding_window"] is None and facts["expert_count"] is None and facts["expert_used_count"] is None
    assert facts["file_size"] == qwen.stat().st_size == facts["data_end"]
    assert facts["source"] == str(qwen)
    # the JSON is deterministic: sorted keys, the same bytes twice
    assert list(facts) == sorted(facts) and run_cli("inspect", str(qwen), "--json").stdout == result.stdout


def test_the_facts_agree_with_gguf_own_reader(qwen: Path):
    reader = gguf.GGUFReader(str(qwen))
    facts = gguf_header.parse(qwen.read_bytes(), complete=True, file_size=qwen.stat().st_size)
    assert facts["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    assert facts["data_offset"] == reader.data_offset
    by_type: dict = {}
    for tensor in reader.tensors:
        by_type[tensor.tensor_type.name] = by_type.get(tensor.tensor_type.name, 0) + int(tensor.n_bytes)
    assert {name: entry["bytes"] for name, entry in facts["tensor_types"].items()} == by_type


def test_the_type_tables_match_the_gguf_package():
    for ggml_type, (name, block, size) in gguf_header.GGML_TYPES.items():
        kind = gguf.GGMLQuantizationType(ggml_type)
        assert kind.name == name and gguf.GGML_QUANT_SIZES[kind] == (block, size)
    for number, name in gguf_header.FILE_TYPES.items():
        assert gguf.LlamaFileType(number).name.removeprefix("MOSTLY_") == name


def test_the_text_output_names_the_facts(qwen: Path):
    result = run_cli("inspect", str(qwen))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for expected in ("architecture    qwen2", "parameters      2,792,320", "file type       Q8_0",
                     "layers          24", "heads           14", "KV heads        2", "head dim        64",
                     "vocabulary      151,936", "context length  32,768",
                     "  Q8_0          24 tensors, 2,752,512 parameters, 2,924,544 bytes"):
        assert expected in lines
    assert not any(line.startswith(("sliding window", "experts")) for line in lines)  # absent facts left out
    types = [line.split()[0] for line in lines[lines.index("tensor types") + 1:]]
    assert types == ["Q8_0", "F32", "F16"]  # most parameters first


def test_moe_sliding_window_and_key_length(tmp_path: Path):
    keys = {"context_length": 131072, "embedding_length": 2880, "block_count": 24, "attention.head_count": 64,
            "attention.head_count_kv": 8, "attention.key_length": 64, "attention.sliding_window": 128,
            "expert_count": 32, "expert_used_count": 4}
    tensors = {"blk.0.ffn_gate_exps.weight": (np.zeros((32, 4, 64), dtype=np.float16), None)}
    path = write_gguf(tmp_path / "gpt-oss-like.gguf", "gpt-oss", keys, 1000, tensors, 1)
    result, facts = inspect_json(str(path))
    assert result.exit_code == 0, result.output
    assert (facts["expert_count"], facts["expert_used_count"], facts["sliding_window"]) == (32, 4, 128)
    assert facts["head_dim"] == 64  # key_length wins over 2880 / 64 = 45
    assert facts["parameters"] == 32 * 4 * 64 and facts["file_type"] == "F16" and facts["vocab_size"] == 1000


def test_a_served_100_mb_file_is_read_with_a_few_small_range_requests(padded: Path, server: FileServer):
    body = padded.read_bytes()
    server.files["m.gguf"] = body
    result, facts = inspect_json(server.url("m.gguf"))
    assert result.exit_code == 0, result.output
    # 256 KiB, then the next 256 KiB: the header is about 430 KB; each byte asked for once
    assert [entry["range"] for entry in server.log] == ["bytes=0-262143", "bytes=262144-524287"]
    assert facts["requests"] == ["bytes=0-262143", "bytes=262144-524287"]
    sent = sum(entry["sent"] for entry in server.log)
    assert sent == facts["bytes_read"] == 524288 and sent < len(body) / 100  # 0.52% of the file
    assert facts["file_size"] == len(body) > MB100 and facts["parameters"] == MB100 + 4096
    assert facts["tensor_types"]["I8"] == {"tensors": 1, "parameters": MB100, "bytes": MB100}
    assert facts["vocab_size"] == 32000 and facts["head_dim"] == 128 and facts["source"] == server.url("m.gguf")


def test_a_served_file_gives_the_same_facts_as_the_local_one(qwen: Path, server: FileServer):
    server.files["q.gguf"] = qwen.read_bytes()
    _, local = inspect_json(str(qwen))
    result, served = inspect_json(server.url("q.gguf"))
    assert result.exit_code == 0, result.output
    for key in ("source", "bytes_read", "requests"):
        local.pop(key, None)
        served.pop(key)
    assert served == local
    # the 2.3 MB header of a 151,936-token vocabulary: doubling ranges, contiguous, none repeated
    ranges = [tuple(int(n) for n in entry["range"][6:].split("-")) for entry in server.log]
    assert ranges[0] == (0, 262143) and all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert len(ranges) <= 5 and all(entry["status"] == 206 for entry in server.log)


def test_a_server_that_ignores_range_is_read_only_as_far_as_the_header(padded: Path, server: FileServer):
    server.files["m.gguf"] = padded.read_bytes()
    server.faults["ignore_range"] = True
    result, facts = inspect_json(server.url("m.gguf"))
    assert result.exit_code == 0, result.output
    assert [entry["status"] for entry in server.log] == [200]  # one answer, read on, then closed
    assert facts["bytes_read"] < 1_000_000 and facts["file_size"] == padded.stat().st_size
    assert facts["vocab_size"] == 32000
    # the server could push only what the socket buffers took before the client hung up
    assert server.log[0]["sent"] < 0.2 * MB100


def test_retries_a_5xx_then_succeeds(qwen: Path, server: FileServer):
    server.files["q.gguf"] = qwen.read_bytes()
    server.faults["fail"] = 1
    result, facts = inspect_json(server.url("q.gguf"))
    assert result.exit_code == 0, result.output
    assert [entry["status"] for entry in server.log][:2] == [500, 206]


def test_a_connection_dropped_mid_range_is_asked_again(padded: Path, server: FileServer):
    server.files["m.gguf"] = padded.read_bytes()
    server.faults["drop_after"] = 100_000
    result, facts = inspect_json(server.url("m.gguf"))
    assert result.exit_code == 0, result.output
    assert [entry["range"] for entry in server.log] == ["bytes=0-262143", "bytes=0-262143", "bytes=262144-524287"]
    assert facts["vocab_size"] == 32000


def test_network_failures_exit_3_without_a_traceback(server: FileServer):
    result = run_cli("inspect", server.url("missing.gguf"))
    assert result.exit_code == 3 and "HTTP 404" in result.stderr and "Traceback" not in result.output
    assert len(server.log) == 1  # a 404 is not retried
    server.log.clear()
    server.files["x.gguf"] = b"GGUF"
    server.faults["fail"] = 10
    result = run_cli("inspect", server.url("x.gguf"))
    assert result.exit_code == 3 and "HTTP 500 (after 3 attempts)" in result.stderr
    assert len(server.log) == 3


def test_redirects_are_followed_under_the_url_policy(padded: Path, server: FileServer):
    server.files["m.gguf"] = padded.read_bytes()
    server.faults["redirect"] = {"r.gguf": server.url("m.gguf"), "away.gguf": "http://example.com/m.gguf"}
    result, facts = inspect_json(server.url("r.gguf"))
    assert result.exit_code == 0, result.output
    assert [(entry["path"], entry["status"]) for entry in server.log] == [("/r.gguf", 302), ("/m.gguf", 206),
                                                                           ("/m.gguf", 206)]
    assert facts["source"] == server.url("r.gguf") and facts["vocab_size"] == 32000
    result = run_cli("inspect", server.url("away.gguf"))
    assert result.exit_code == 3 and "refused the redirect" in result.stderr, result.output


def test_a_compressed_answer_is_refused_once_not_inflated(server: FileServer):
    import gzip

    server.files["z.gguf"] = b"GGUF"
    server.faults["gzip"] = gzip.compress(bytes(1 << 20))
    result = run_cli("inspect", server.url("z.gguf"))
    assert result.exit_code == 3 and "refused a compressed body" in result.stderr, result.output
    assert len(server.log) == 1 and server.log[0]["accept_encoding"] == "identity"


def test_a_refused_url_or_a_missing_file_is_a_usage_error(tmp_path: Path):
    result = run_cli("inspect", "http://example.invalid/m.gguf")
    assert result.exit_code == 2 and "plain http is allowed only to loopback" in result.stderr
    result = run_cli("inspect", "https://user:hunter2@127.0.0.1:1/m.gguf?token=abc")
    assert result.exit_code == 3 and "after 3 attempts" in result.stderr  # nothing listens on port 1
    assert "hunter2" not in result.output and "abc" not in result.output
    result = run_cli("inspect", str(tmp_path / "nope.gguf"))
    assert result.exit_code == 2 and "no such file" in result.stderr
    result = run_cli("inspect", str(tmp_path))
    assert result.exit_code == 2 and "not a regular file" in result.stderr


def header(version=3, tensors=0, kvs=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def kv_string(key: str, value_type: int, payload: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", value_type) + payload


BAD = {
    "not-gguf": (b"PK\x03\x04" + bytes(60), "E290", "not a GGUF file"),
    "version-1": (header(version=1), "E291", "GGUF version 1 is not supported"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "E291", "big-endian"),
    "tensor-count": (header(tensors=2 ** 60), "E293", "the tensor count claims"),
    "kv-count": (header(kvs=2 ** 62), "E293", "the key/value count claims"),
    "string-length": (header(kvs=1) + struct.pack("<Q", 2 ** 40), "E293", "64 MiB bound"),
    "array-length": (header(kvs=1) + kv_string("a", 9, struct.pack("<IQ", 4, 2 ** 61)), "E293", "array length"),
    "value-type": (header(kvs=1) + kv_string("a", 77, b""), "E293", "unknown value type 77"),
    "nested-array": (header(kvs=1) + kv_string("a", 9, struct.pack("<IQ", 9, 1)), "E293", "array of arrays"),
    "dims": (header(tensors=1) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 9), "E293", "9 dimensions"),
    "empty": (b"", "E292", "truncated"),
    "short-header": (header(kvs=3)[:20], "E292", "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_is_a_diagnostic_with_exit_1(case: str, tmp_path: Path, server: FileServer):
    data, code, words = BAD[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    server.files["bad.gguf"] = data
    for target in (str(path), server.url("bad.gguf")):
        result = run_cli("inspect", target)
        assert result.exit_code == 1, result.output
        assert f"{code}]" in result.stderr and words in result.stderr, result.stderr
        assert "Traceback" not in result.output and result.stdout == ""


def test_a_file_cut_short_in_its_header_or_its_data_is_truncated(qwen: Path, tmp_path: Path):
    data = qwen.read_bytes()
    facts = gguf_header.parse(data, complete=True, file_size=len(data))
    for cut in (1000, facts["header_bytes"] - 1, len(data) - 1):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        result = run_cli("inspect", str(path))
        assert result.exit_code == 1 and "E292]" in result.stderr and "truncated" in result.stderr, result.stderr


@pytest.mark.parametrize("bound, words", [(1 << 20, "claims 151,936 items"), (2 << 20, "the 2 MiB bound")])
def test_a_header_over_the_bound_is_refused_after_reading_at_most_the_bound(bound, words, qwen: Path,
                                                                            server: FileServer, monkeypatch):
    # the Qwen header is 2.3 MB: at 1 MiB its vocabulary's array length alone is refused (151,936 strings of
    # at least 8 bytes cannot fit); at 2 MiB the strings are walked until the next one would pass the bound
    monkeypatch.setattr(gguf_header, "MAX_HEADER", bound)
    server.files["q.gguf"] = qwen.read_bytes()
    result = run_cli("inspect", server.url("q.gguf"))
    assert result.exit_code == 1 and "E293]" in result.stderr and words in result.stderr, result.stderr
    assert sum(entry["sent"] for entry in server.log) <= bound
