"""The work folder and journal of a blocked ``detect``: what lets an interrupted run resume.

A blocked run keeps its parts in ``<out>/.geochange-detect/``: ``journal.json`` (the run's
fingerprint and the finished blocks, rewritten atomically) and one folder per finished block,
which a worker fills under a temporary name and renames when complete. A folder that exists is
therefore whole, whoever died when. ``--resume`` reuses the finished blocks only when the
fingerprint (inputs, settings, the scene fit) is the one the journal holds; the work folder is
removed once the outputs are published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np

from geochange.errors import GeochangeError
from geochange.io.atomic import commit, discard, write_text

WORK_DIR = ".geochange-detect"
DONE = "block.json"


class BlockJournal:
    """The blocks of one run: which are finished, where their parts are, and the run they belong to."""

    def __init__(self, out_dir: str | Path, fingerprint: dict, n_blocks: int) -> None:
        self.root = Path(out_dir) / WORK_DIR
        self.fingerprint, self.n_blocks = fingerprint, n_blocks
        self.done: set[int] = set()

    @staticmethod
    def exists(out_dir: str | Path) -> bool:
        return (Path(out_dir) / WORK_DIR / "journal.json").is_file()

    def start(self, resume: bool) -> set[int]:
        """Begin (or, with ``resume``, continue) the run; returns the blocks already finished."""
        journal = self.root / "journal.json"
        if resume and journal.is_file():
            old = json.loads(journal.read_text(encoding="utf-8"))
            changed = _differences(old.get("fingerprint", {}), self.fingerprint)
            if changed:
                raise GeochangeError(f"{self.root.parent}: the unfinished run there differs from this one "
                                     f"({changed[0]}); pass --overwrite to start again instead of --resume")
            self.done = {i for i in range(self.n_blocks) if (self.block_dir(i) / DONE).is_file()}
        else:
            discard(self.root)
            self.root.mkdir(parents=True)
        (self.root / "blocks").mkdir(exist_ok=True)
        self._write()
        return set(self.done)

    def block_dir(self, index: int) -> Path:
        return self.root / "blocks" / f"{index:05d}"

    def mark_done(self, index: int) -> None:
        """Record a finished block (its folder was published by the worker)."""
        self.done.add(index)
        self._write()

    def remove(self) -> None:
        discard(self.root)

    def _write(self) -> None:
        write_text(self.root / "journal.json", json.dumps(
            {"fingerprint": self.fingerprint, "blocks": self.n_blocks, "done": sorted(self.done)}, indent=1) + "\n")


def publish_block(final: Path, fill) -> None:
    """Fill a block's folder under a temporary name (``fill(folder)``), then rename it into place.

    A worker lost half-way leaves only a temporary folder behind, which the next attempt ignores.
    """
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        if (final / DONE).is_file():  # another attempt finished first: same content
            discard(tmp)
            return
        discard(final)
        commit(tmp, final)
    except BaseException:
        discard(tmp)
        raise


def file_identity(path: str | None) -> dict | None:
    """Path, size and modification time of a local file (remote paths: the path only)."""
    if not path:
        return None
    if "://" in path or path.startswith("/vsi") or not os.path.exists(path):
        return {"path": path}
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def state_digest(obj) -> str:
    """SHA-256 of what a fitted model (or normaliser) predicts with: its arrays, tensors and settings.

    Used to check that a resumed run refitted the scene to the same state as the interrupted one
    (pickles are not stable enough to compare: closures, tracker ids).
    """
    h = hashlib.sha256()
    _digest(obj, h, set())
    return h.hexdigest()


def _digest(obj, h, seen: set[int]) -> None:
    torch = sys.modules.get("torch")  # a model holding tensors has imported it; do not import it for one that has not

    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(repr(obj).encode())
    elif isinstance(obj, np.ndarray):
        h.update(f"{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        h.update(repr(obj.item()).encode())
    elif torch is not None and isinstance(obj, torch.Tensor):
        _digest(obj.detach().cpu().numpy(), h, seen)
    elif id(obj) in seen:
        return
    elif torch is not None and isinstance(obj, torch.nn.Module):
        seen.add(id(obj))
        for key, value in obj.state_dict().items():
            h.update(key.encode())
            _digest(value, h, seen)
    elif isinstance(obj, dict):
        seen.add(id(obj))
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _digest(obj[key], h, seen)
    elif isinstance(obj, (list, tuple)):
        seen.add(id(obj))
        for item in obj:
            _digest(item, h, seen)
    elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        seen.add(id(obj))
        h.update(type(obj).__qualname__.encode())
        _digest(dict(vars(obj)), h, seen)
    else:  # opaque handles (a FAISS index, a random generator): their type only
        h.update(type(obj).__qualname__.encode())


def _differences(old: dict, new: dict) -> list[str]:
    """The keys (dotted) whose values differ between two fingerprints."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in _differences(a, b)]
        elif a != b:
            out.append(key if key != "fit" else "the scene fit came out different")
    return out
