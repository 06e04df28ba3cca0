"""A GGUF header, bytes -> facts: pure, no I/O, no third-party import.

The layout (little-endian; llama.cpp's gguf-py writes it): magic b"GGUF", uint32 version (2 or 3),
uint64 tensor count, uint64 key/value count; each key/value is a string key (uint64 length + UTF-8),
a uint32 value type and the value (an array is a uint32 item type, a uint64 count, the items); then
each tensor's info: a string name, uint32 dimension count, uint64 dimensions, uint32 ggml type,
uint64 offset into the data section. Only this header is read, never the tensor data, so a 60 GB
file costs a few MiB. `parse` raises NeedMore while the bytes given end inside the header (the
caller reads more and calls again) and BadHeader for a file that is not a GGUF we can read. Every
count and length is bounded before anything is allocated for it: a hostile header cannot make us
build a list of 2**64 items.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 (uint32 counts) was dropped by llama.cpp in 2023
MAX_HEADER = 64 << 20  # bytes: a real header (a 256k-token vocabulary and its merges) is under 16 MiB
MAX_TENSORS = 1 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
KEEP_ARRAY = 4096  # numeric arrays up to this many items are kept (per-layer head counts); longer ones counted

# value type -> (struct format, size) for fixed-size values; 8 STRING and 9 ARRAY are read by hand
SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
           7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
STRING, ARRAY = 8, 9

# ggml type -> (name, elements per block, bytes per block): gguf-py's GGMLQuantizationType and
# GGML_QUANT_SIZES (tests check this copy against the installed package)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
# general.file_type -> name: llama.cpp's llama_ftype (gguf-py's LlamaFileType without MOSTLY_)
FILE_TYPES = {
    0: "ALL_F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED",
}


class NeedMore(Exception):
    """The bytes end inside the header: call again with at least `size` bytes."""

    def __init__(self, size: int):
        super().__init__(f"need {size} bytes")
        self.size = size


class BadHeader(ValueError):
    """Not a GGUF header we can read; `code` is its diagnostic code (README, "Diagnostics")."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Array:
    """A key's array value: its item type and length, and its items when short and numeric."""

    item_type: int
    count: int
    items: tuple | None = None


class _Reader:
    def __init__(self, data: bytes, complete: bool):
        self.data, self.complete, self.pos = memoryview(data), complete, 0

    def need(self, size: int, what: str) -> None:
        end = self.pos + size
        if end > MAX_HEADER:
            raise BadHeader("E293", f"{what} at byte {self.pos:,} claims {size:,} bytes: the header would pass "
                                    f"the {MAX_HEADER >> 20} MiB bound")
        if end > len(self.data):
            if self.complete:
                raise BadHeader("E292", f"the file ends at byte {len(self.data):,}, inside the header "
                                        f"({what}): truncated")
            raise NeedMore(end)

    def scalar(self, value_type: int, what: str):
        fmt, size = SCALARS[value_type]
        self.need(size, what)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def string(self, what: str, keep: bool = True) -> str | None:
        length = self.scalar(10, what)
        self.need(length, what)
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return bytes(raw).decode("utf-8", "replace") if keep else None

    def count(self, what: str, limit: int, item_size: int) -> int:
        """A uint64 count, bounded by `limit` and by the header bound at `item_size` bytes an item."""
        value = self.scalar(10, what)
        if value > limit or value * item_size > MAX_HEADER:
            raise BadHeader("E293", f"{what} claims {value:,} items (at most {min(limit, MAX_HEADER // item_size):,} "
                                    "fit a header): not a sane GGUF header")
        return value

    def value(self, value_type: int, what: str):
        if value_type in SCALARS:
            return self.scalar(value_type, what)
        if value_type == STRING:
            return self.string(what)
        if value_type == ARRAY:
            item_type = self.scalar(4, what)
            if item_type == ARRAY:  # llama.cpp writes no nested arrays; skipping one would mean recursion
                raise BadHeader("E293", f"{what} is an array of arrays, which GGUF files do not hold")
            if item_type not in SCALARS and item_type != STRING:
                raise BadHeader("E293", f"{what} has an unknown array item type {item_type}")
            size = SCALARS[item_type][1] if item_type in SCALARS else 8
            count = self.count(f"{what} (array length)", MAX_HEADER, size)
            if item_type == STRING:  # walk the lengths, decode nothing: a vocabulary is 150k strings
                for _ in range(count):
                    self.string(what, keep=False)
                return Array(item_type, count)
            self.need(count * size, what)
            items = None
            if count <= KEEP_ARRAY:
                items = struct.unpack_from(f"<{count}{SCALARS[item_type][0][1]}", self.data, self.pos)
            self.pos += count * size
            return Array(item_type, count, items)
        raise BadHeader("E293", f"{what} has an unknown value type {value_type}")


def parse(data: bytes, complete: bool = False, file_size: int | None = None) -> dict:
    """The facts of the GGUF header at the start of `data`. `complete`: `data` is the whole file (so
    running out of bytes means truncated, not NeedMore). `file_size`, when known, is reported."""
    reader = _Reader(data, complete or (file_size is not None and len(data) >= file_size))
    reader.need(4, "the magic")
    if bytes(reader.data[:4]) != MAGIC:
        raise BadHeader("E290", f"not a GGUF file: it starts with {bytes(reader.data[:4])!r}, not b'GGUF'")
    reader.pos = 4
    version = reader.scalar(4, "the version")
    if version not in VERSIONS:
        endian = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise BadHeader("E291", f"GGUF version {version}{endian} is not supported (versions 2 and 3 are)")
    tensor_count = reader.count("the tensor count", MAX_TENSORS, 8 + 4 + 8 + 4 + 8)
    kv_count = reader.count("the key/value count", MAX_HEADER, 8 + 4)
    kv: dict = {}
    for _ in range(kv_count):
        key = reader.string("a key")
        kv[key] = reader.value(reader.scalar(4, f"the type of {key!r}"), repr(key))
    tensors = []
    for _ in range(tensor_count):
        name = reader.string("a tensor name")
        n_dims = reader.scalar(4, f"the dimensions of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise BadHeader("E293", f"tensor {name!r} claims {n_dims} dimensions (ggml has at most {MAX_DIMS})")
        dims = [reader.scalar(10, f"a dimension of tensor {name!r}") for _ in range(n_dims)]
        ggml_type = reader.scalar(4, f"the type of tensor {name!r}")
        offset = reader.scalar(10, f"the offset of tensor {name!r}")
        tensors.append((name, dims, ggml_type, offset))
    alignment = kv.get("general.alignment", 32)
    alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
    data_offset = -(-reader.pos // alignment) * alignment
    found = facts(version, kv, tensors, reader.pos, data_offset, file_size)
    # a partial download has a whole header and part of the data: the tensor infos say where it must end
    if file_size is not None and found["data_end"] is not None and file_size < found["data_end"]:
        raise BadHeader("E292", f"the tensors end at byte {found['data_end']:,} but the file has "
                                f"{file_size:,} bytes: truncated")
    return found


def facts(version: int, kv: dict, tensors: list, header_bytes: int, data_offset: int,
          file_size: int | None) -> dict:
    """What hostfit reports from the keys and tensor infos; None where the file does not say."""
    types: dict[str, dict] = {}
    parameters = experts = 0
    data_end: int | None = data_offset if tensors else None
    for name, dims, ggml_type, offset in tensors:
        elements = 1
        for dim in dims:
            elements *= dim
        parameters += elements
        if "_exps." in name:  # llama.cpp's routed-expert tensors (ffn_up_exps ...): a token uses a few of them
            experts += elements
        kind, block, size = GGML_TYPES.get(ggml_type, (f"type{ggml_type}", None, None))
        entry = types.setdefault(kind, {"tensors": 0, "parameters": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["parameters"] += elements
        if block is None or entry["bytes"] is None:  # a type newer than this table: bytes unknown
            entry["bytes"] = data_end = None
        else:
            nbytes = -(-elements // block) * size
            entry["bytes"] += nbytes
            data_end = None if data_end is None else max(data_end, data_offset + offset + nbytes)
    file_type = kv.get("general.file_type")
    name = kv.get("general.name")
    split = kv.get("split.count")
    return {
        **architecture(kv),
        "name": name if isinstance(name, str) else None,
        "gguf_version": version,
        "parameters": parameters,
        "expert_parameters": experts,
        "tensor_count": len(tensors),
        "file_type": FILE_TYPES.get(file_type, f"type{file_type}") if isinstance(file_type, int) else None,
        "tensor_types": dict(sorted(types.items(), key=lambda item: (-item[1]["parameters"], item[0]))),
        "split_count": split if isinstance(split, int) and not isinstance(split, bool) else None,
        "header_bytes": header_bytes,
        "data_offset": data_offset,
        "data_end": data_end,
        "file_size": file_size,
    }


def architecture(kv: dict) -> dict:
    """The model's shape from GGUF key/values: a header's, or Ollama's /api/show `model_info` (the same
    keys as JSON, arrays as lists). None where the keys do not say."""
    arch = kv.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def items(value):
        if isinstance(value, Array):
            return value.items
        return tuple(value) if isinstance(value, list) else None

    def number(value):
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def key(name):
        value = kv.get(f"{arch}.{name}") if arch else None
        listed = items(value)
        if listed is not None:  # per-layer values (OpenELM, sliding/global mixes): the largest
            value = max((v for v in listed if number(v) is not None), default=None)
        return number(value)

    heads, embedding = key("attention.head_count"), key("embedding_length")
    head_dim = key("attention.key_length") or (embedding // heads if heads and embedding else None)
    tokens = kv.get("tokenizer.ggml.tokens")
    pattern = kv.get(f"{arch}.attention.sliding_window_pattern") if arch else None
    listed = items(pattern)
    if listed is not None:  # one flag per layer (Gemma 4): kept as given
        pattern = [bool(v) for v in listed] if listed and len(listed) <= KEEP_ARRAY else None
    elif not isinstance(number(pattern), int):  # else a period, as llama.cpp's set_swa_pattern takes it
        pattern = None
    return {
        "architecture": arch,
        "context_length": key("context_length"),
        "block_count": key("block_count"),
        "embedding_length": embedding,
        "head_count": heads,
        "head_count_kv": key("attention.head_count_kv") or heads,
        "head_dim": head_dim,
        "sliding_window": key("attention.sliding_window"),
        "sliding_window_pattern": pattern,
        "expert_count": key("expert_count"),
        "expert_used_count": key("expert_used_count"),
        "vocab_size": tokens.count if isinstance(tokens, Array) else key("vocab_size"),
    }
