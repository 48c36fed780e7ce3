"""Local fan-out handlers (decision 0009). A handler answers a verified query from this pool's own data
and stores nothing. `FolderSearch` is the one that ships: a bounded text search over a local folder
(node.toml `fanout_folder`). Another handler only has to implement `FanoutHandler`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

DEFAULT_RESULTS = 20


@dataclass(frozen=True)
class Hit:
    name: str
    snippet: str
    line: int = 0


@dataclass(frozen=True)
class Answer:
    hits: tuple[Hit, ...]
    truncated: bool = False


@dataclass(frozen=True)
class Query:
    """What a handler sees of a verified query."""

    text: str
    origin_pool: str
    author: str
    level: str
    max_results: int = 0  # 0: the handler's default


class FanoutHandler(Protocol):
    name: str

    def answer(self, query: Query) -> Answer: ...


@dataclass
class FolderSearch:
    """Files under `folder` whose name or text contains every word of the query (case-insensitive).

    Bounded: at most `max_files` files visited and `max_bytes` read in all (`max_file_bytes` of each),
    hidden entries and symbolic links skipped, binary files (a NUL in their first KiB) skipped; results
    are sorted by name, each with a snippet of at most `snippet_chars` around its first match.
    """

    folder: Path
    max_files: int = 2_000
    max_file_bytes: int = 1 << 20
    max_bytes: int = 32 << 20
    max_results: int = DEFAULT_RESULTS
    snippet_chars: int = 160
    name: str = field(default="folder-search", init=False)

    def answer(self, query: Query) -> Answer:
        words = [w for w in query.text.lower().split() if w]
        limit = min(query.max_results or self.max_results, self.max_results * 5)
        hits: list[Hit] = []
        truncated = False
        read = 0
        root = self.folder.resolve()
        for visited, path in enumerate(self._files(root)):
            if visited >= self.max_files or read >= self.max_bytes:
                truncated = True
                break
            rel = path.relative_to(root).as_posix()
            text, size = self._read(path, min(self.max_file_bytes, self.max_bytes - read))
            read += size
            hit = self._match(rel, text, words)
            if hit is not None:
                if len(hits) == limit:
                    truncated = True
                    break
                hits.append(hit)
        return Answer(tuple(hits), truncated)

    def _files(self, root: Path) -> list[Path]:
        out: list[Path] = []
        if not root.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode):
                    out.append(path)
                if len(out) > self.max_files:
                    return sorted(out)
        return sorted(out)

    @staticmethod
    def _read(path: Path, limit: int) -> tuple[str | None, int]:
        try:
            with path.open("rb") as f:
                data = f.read(max(0, limit))
        except OSError:
            return None, 0
        if b"\0" in data[:1024]:
            return None, len(data)
        return data.decode("utf-8", errors="replace"), len(data)

    def _match(self, rel: str, text: str | None, words: list[str]) -> Hit | None:
        lowered = text.lower() if text is not None else ""
        name = rel.lower()
        if not words or not all(w in name or w in lowered for w in words):
            return None
        first = next((w for w in words if w in lowered), None)
        if first is None or text is None:
            return Hit(rel, "", 0)
        at = lowered.index(first)
        start = max(0, at - self.snippet_chars // 3)
        snippet = " ".join(text[start:start + self.snippet_chars].split())
        return Hit(rel, snippet, text.count("\n", 0, at) + 1)
