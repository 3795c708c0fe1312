"""Writes that readers never see half done: the one helper for files and folders.

A file is written under a temporary name beside its target and renamed over it (a rename within one
folder is atomic on POSIX and Windows); a folder is filled under a temporary name and renamed into
place. A crash leaves either the old content or the new, never a mix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _finite(value):
    """NaN and inf become null: strict JSON has no spelling for them (a skipped step's loss is NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def atomic_write_json(path: Path, data) -> Path:
    return atomic_write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False))


def round_numbers(folder: Path) -> list[int]:
    """The N of every `round-N` entry of `folder`, ascending (none if it does not exist)."""
    return sorted(int(p.name[len("round-"):]) for p in folder.glob("round-*") if p.name[len("round-"):].isdigit())


def child(root: Path, *names: str) -> Path:
    """root/names..., refusing any name that would lead outside root (absolute, '..', separators)."""
    path = root.joinpath(*names)
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise ValueError(f"'{name}' cannot name a folder inside {root}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} leads outside {root}")
    return path


class LinkLeavesFolder(ValueError):
    """A symbolic link inside a run folder that points outside it: writing or deleting through it would
    touch files the run does not own."""


def links_leaving(root: Path) -> list[str]:
    """Entries under `root` that are symbolic links resolving outside it, as 'name -> target'."""
    base, found = root.resolve(), []
    for folder, dirs, names in os.walk(root):  # a linked folder is listed, never entered
        for name in dirs + names:
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(base):
                found.append(f"{path.relative_to(root)} -> {os.readlink(path)}")
    return found


def refuse_links_leaving(root: Path) -> None:
    """LinkLeavesFolder naming the first links of `root` that lead outside it; nothing is touched."""
    found = links_leaving(root) if root.is_dir() else []
    if found:
        raise LinkLeavesFolder(f"{root} holds links that lead outside it ({'; '.join(found[:3])}); nothing is read, "
                               f"written or deleted through them: remove them, or copy what they point to in")


def atomic_folder(target: Path, write: Callable[[Path], object], replace: bool = False) -> Path:
    """Fill a new folder through `write(tmp)` and rename it to `target`. An existing target is kept
    (another process won the race) unless `replace`, in which case it is swapped out after the new one
    is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        if target.exists() and not replace:
            shutil.rmtree(tmp)
            return target
        old = None
        if target.exists():
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
