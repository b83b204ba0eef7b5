"""Deterministic build contexts: the same --size gives byte-identical trees on every machine.

A generator writes its tree once and leaves `<dir>.stamp` with its parameters beside it (not inside, so the
stamp is no part of the context); a later call with the same parameters does nothing.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

WORDS = (b"fn main let mut struct impl return match self crate use pub const static async await where "
         b"trait enum type loop while for break continue unsafe move ref box dyn").split()


def _fresh(out: Path, params: dict) -> bool:
    """True when `out` must be (re)generated; clears it then."""
    stamp = out.with_name(out.name + ".stamp")
    want = json.dumps(params, sort_keys=True)
    if out.is_dir() and stamp.is_file() and stamp.read_text() == want:
        return False
    if out.exists():
        shutil.rmtree(out)
    stamp.unlink(missing_ok=True)
    out.mkdir(parents=True)
    return True


def _stamp(out: Path, params: dict) -> None:
    out.with_name(out.name + ".stamp").write_text(json.dumps(params, sort_keys=True))


def text_bytes(rnd: random.Random, n: int) -> bytes:
    """n bytes of source-like text (compresses about 4:1)."""
    parts, size = [], 0
    while size < n:
        line = b" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) + b";\n"
        parts.append(line)
        size += len(line)
    return b"".join(parts)[:n]


def mixed_bytes(rnd: random.Random, n: int) -> bytes:
    """n bytes, half random and half text, in 64 KiB blocks: compresses about like a binary-heavy layer."""
    out = bytearray()
    phrase = text_bytes(rnd, 64 * 1024)
    while len(out) < n:
        out += rnd.randbytes(32 * 1024)
        off = rnd.randrange(0, 32 * 1024)
        out += phrase[off:off + 32 * 1024]
    return bytes(out[:n])


def source_tree(out: Path, files: int, total_bytes: int, seed: int = 7) -> None:
    """`files` files under src/dNNN/ (100 per directory) totalling about `total_bytes`, sizes from 1 KiB up."""
    files = max(1, files)
    params = {"kind": "source_tree", "files": files, "bytes": total_bytes, "seed": seed, "v": 1}
    if not _fresh(out, params):
        return
    rnd = random.Random(seed)
    avg = max(1, total_bytes // files)
    # One text block reused at shifting offsets keeps generation fast; file contents still all differ.
    pool = text_bytes(rnd, 4 * 1024 * 1024) + rnd.randbytes(4 * 1024 * 1024)
    for i in range(files):
        d = out / "src" / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = max(16, int(avg * rnd.uniform(0.05, 1.95)))
        head = f"// file {i} of {files}\n".encode()
        body = b""
        while len(body) < size:
            off = rnd.randrange(0, len(pool) - 1)
            body += pool[off:off + size - len(body)]
        (d / f"f{i:05d}.c").write_bytes(head + body[:max(0, size - len(head))])
    _stamp(out, params)


def big_tree(out: Path, total_bytes: int, file_bytes: int = 16 * 1024 * 1024, seed: int = 11) -> None:
    """data/partNNN.bin files of `file_bytes` (half random, half text) totalling `total_bytes`."""
    params = {"kind": "big_tree", "bytes": total_bytes, "file_bytes": file_bytes, "seed": seed, "v": 1}
    if not _fresh(out, params):
        return
    rnd = random.Random(seed)
    (out / "data").mkdir()
    left, i = total_bytes, 0
    while left > 0:
        n = min(file_bytes, left)
        (out / "data" / f"part{i:04d}.bin").write_bytes(mixed_bytes(rnd, n))
        left -= n
        i += 1
    _stamp(out, params)


def small_tree(out: Path, note: str) -> None:
    """A context with one small file (for scenarios whose work is in RUN steps)."""
    params = {"kind": "small", "note": note, "v": 1}
    if not _fresh(out, params):
        return
    (out / "README").write_text(note + "\n")
    _stamp(out, params)
