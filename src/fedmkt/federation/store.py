"""The run folder, owned by one class: what a run writes and what a resume reads back.

    config.yaml          the resolved config
    metrics.json         RunMetrics, rewritten after every round (atomically)
    steps.jsonl          a line per optimizer step (fedmkt.tracking); a resume drops the rounds it repeats
    round-N/<party>/     LoRA adapters after round N
    answers/round-N/<party>.jsonl   a party's generated answers on the free-text evaluation sets after round N
                         (0: zero-shot), a line per question: domain, uid, question, references, answer,
                         rougeL; `<client>.own.jsonl` for a client's own held-out set, written by the client
                         into its own store (on Flower its node's: those prompts never leave it)
    checkpoint/          round-N/ (server adapter, RNG state), then state.json, written last: a crash
                         between the writes leaves the previous checkpoint in force
    summary.md           written by the caller when the run ends
    .lock, .lock-holder.json   the OS lock one process holds while it writes the folder, and who that is
A zero-shot cache (a file shared by the cells of an experiment grid) is read and written here too.
Nothing read back is pickled: RNG state is JSON, adapters safetensors. A run folder is never read,
written or deleted through a link that leads outside it, and a damaged file read back is named with
what is wrong (DamagedRunFile) before anything is written.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

import numpy as np
import torch
import yaml

from fedmkt.config import ConfigError, RunConfig
from fedmkt.files import (atomic_folder, atomic_write_bytes, atomic_write_json, atomic_write_text, child,
                          refuse_links_leaving)
from fedmkt.federation.protocol import adapter_from_bytes, adapter_to_bytes
from fedmkt.data.questions import Question
from fedmkt.records import ANSWERS, PER_QUESTION, Evaluation, PartyScores, RunMetrics
from fedmkt.summary import summary_markdown
from fedmkt.tracking import drop_steps_after


def rng_state() -> dict:
    """Python's, NumPy's and torch's global RNG state as JSON-safe data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}


def _decoded_rng(state: dict) -> tuple:
    """rng.json's state as what Python's, NumPy's and torch's setters take."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    return ((version, tuple(internal), gauss), (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached),
            torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))


def _checked_rng(data: bytes) -> tuple:
    """rng.json decoded and tried on fresh generators first: a damaged one fails here, not half applied."""
    decoded = python, numpy_state, torch_state = _decoded_rng(json.loads(data))
    random.Random().setstate(python)
    np.random.RandomState().set_state(numpy_state)
    torch.Generator().set_state(torch_state)
    return decoded


def _apply_rng(decoded: tuple) -> None:
    python, numpy_state, torch_state = decoded
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


def set_rng_state(state: dict) -> None:
    _apply_rng(_decoded_rng(state))


LOCK, HOLDER = ".lock", ".lock-holder.json"


class DamagedRunFile(ValueError):
    """A run folder's file that cannot be read back; the message names it and says what is wrong."""


class RunFolderBusy(FileExistsError):
    """Another process holds the run folder's lock."""


def _entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} - {LOCK, HOLDER}


def _startup_leftovers(root: Path) -> bool:
    """A folder a run was killed in before it saved anything but initial adapters, its config and zero-shot
    answers (written as each party is evaluated, before the scores are saved)."""
    entries = _entries(root)
    return (bool(entries) and entries <= {"round-0", "latest", "config.yaml", "answers"}
            and not (root / "metrics.json").exists())


def _lock(root: Path) -> FileLock:
    """The folder's OS lock, taken at once or refused naming its holder. One per process and path
    (is_singleton): a runner that opens its folder again in the same process shares it."""
    lock = FileLock(root.resolve() / LOCK, is_singleton=True, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = json.loads((root / HOLDER).read_text())
            who = f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
        except Exception:  # the holder has not written its name yet, or it was removed
            who = "another process"
        raise RunFolderBusy(f"run folder {root} is in use by {who}; a folder takes one run at a time") from None
    if lock.lock_counter == 1:
        atomic_write_json(root / HOLDER, {"pid": os.getpid(), "host": socket.gethostname(),
                                          "since": datetime.now().isoformat(timespec="seconds")})
    return lock


def read_back(path: Path, parse: Callable[[bytes], object]):
    """`parse(path's bytes)`, any failure a DamagedRunFile naming the file and what is wrong."""
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        raise DamagedRunFile(f"{path} is missing") from None
    except Exception as error:  # JSON, keys, types, safetensors: the file is not what was written
        raise DamagedRunFile(f"{path} is damaged ({type(error).__name__}: {str(error)[:200]}); nothing was "
                             f"changed: restore it, or start the run again in a new folder") from None


def take_answers(results: dict[str, dict], questions: dict[str, list[Question]]) -> list[dict]:
    """Remove the generated answers from a party's domain results (metrics.json keeps scores only) and return
    them as answer-file rows, each beside its question and references."""
    rows = []
    for domain, result in results.items():
        answers = result.pop(ANSWERS, None)
        if answers is None:
            continue
        for q, answer, score in zip(questions[domain], answers, result.get(PER_QUESTION, [])):
            rows.append({"domain": domain, "uid": q.uid, "question": q.question, "references": list(q.references),
                         "answer": answer, "rougeL": score})
    return rows


def write_answers(root: Path, round_no: int, party: str, rows: list[dict]) -> Path | None:
    """answers/round-N/<party>.jsonl under `root` (a run folder or a client's store); nothing without rows."""
    if not rows:
        return None
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return atomic_write_text(child(root, "answers", f"round-{round_no}", f"{party}.jsonl"), text)


@dataclass
class Checkpoint:
    completed_round: int
    server_train_calls: int
    server_adapter: dict[str, torch.Tensor]


class RunStore:
    def __init__(self, root: Path, zero_shot_cache: Path | None = None, lock: FileLock | None = None):
        self.root = root
        self.zero_shot_cache = zero_shot_cache
        self._lock = lock

    @classmethod
    def open(cls, config: RunConfig, resume: bool = False, zero_shot_cache: Path | None = None) -> "RunStore":
        """The run folder named by the config: an existing run to resume, or a new (or empty) folder, locked
        for this process until `close` (or its end)."""
        name = config.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
        root = child(config.output_dir, name)
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"run folder {root} exists and is not a folder; choose another run_name")
        if resume and not root.is_dir():
            raise FileNotFoundError(f"nothing to resume in {root}: no metrics.json")
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = _lock(root)
        except RunFolderBusy:
            raise
        except OSError as error:
            raise ConfigError(f"field `output_dir`: cannot write the run folder {root}: "
                              f"{error.strerror or error}") from None
        try:
            refuse_links_leaving(root)
            store = cls(root, zero_shot_cache, lock)
            store._prepare(resume)
            return store
        except BaseException:
            lock.release()
            raise

    def _prepare(self, resume: bool) -> None:
        root = self.root
        if resume and (root / "metrics.json").is_file():
            return
        if _startup_leftovers(root):  # killed before its zero-shot scores were saved: nothing of value
            for name in _entries(root):
                path = child(root, name)
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        elif resume:
            raise FileNotFoundError(f"nothing to resume in {root}: no metrics.json")
        elif _entries(root):
            raise FileExistsError(f"run folder {root} already exists and is not empty; choose another run_name "
                                  f"or resume it")
        try:
            probe = root / ".writable"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"field `output_dir`: cannot write the run folder {root}: "
                              f"{error.strerror or error}") from None

    def close(self) -> None:
        """Let another process have the folder (the OS does it too when this one ends)."""
        if self._lock is not None and self._lock.is_locked:
            if self._lock.lock_counter == 1:
                (self.root / HOLDER).unlink(missing_ok=True)
            self._lock.release()
        self._lock = None

    # -- config, metrics, summary ---------------------------------------------------------------
    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(child(self.root, "config.yaml"),
                          yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))

    def write_metrics(self, metrics: RunMetrics) -> None:
        atomic_write_json(child(self.root, "metrics.json"), metrics.to_json())

    def read_metrics(self) -> RunMetrics:
        return read_back(child(self.root, "metrics.json"), lambda data: RunMetrics.from_json(json.loads(data)))

    def write_summary(self, metrics: RunMetrics) -> Path:
        return atomic_write_text(child(self.root, "summary.md"), summary_markdown(metrics))

    @property
    def steps(self) -> Path:
        return child(self.root, "steps.jsonl")

    def drop_steps_after(self, round_no: int) -> None:
        drop_steps_after(self.steps, round_no)

    def adapter_dir(self, round_no: int, party: str) -> Path:
        return child(self.root, f"round-{round_no}", party)

    # -- checkpoint -------------------------------------------------------------------------------
    def save_checkpoint(self, round_no: int, server_adapter: dict[str, torch.Tensor], server_train_calls: int) -> None:
        ckpt = child(self.root, "checkpoint")

        def write(folder: Path) -> None:
            atomic_write_bytes(folder / "server_adapter.safetensors", adapter_to_bytes(server_adapter))
            atomic_write_json(folder / "rng.json", rng_state())

        atomic_folder(child(ckpt, f"round-{round_no}"), write, replace=True)
        # The manifest goes last: until it names round N, a resume uses the checkpoint before.
        atomic_write_json(child(ckpt, "state.json"), {"completed_round": round_no, "server_train_calls": server_train_calls})
        for old in ckpt.glob("round-*"):
            if old.name != f"round-{round_no}":
                old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)  # a link: itself only

    def load_checkpoint(self) -> Checkpoint | None:
        """The last complete checkpoint, with the RNG state restored; None before the first. Every file is
        read and checked before anything is restored: a damaged one is named and nothing changes."""
        ckpt = child(self.root, "checkpoint")
        if not (ckpt / "state.json").is_file():
            return None

        def manifest(data: bytes) -> tuple[int, int]:
            saved = json.loads(data)
            return int(saved["completed_round"]), int(saved["server_train_calls"])

        completed, train_calls = read_back(child(ckpt, "state.json"), manifest)
        folder = child(ckpt, f"round-{completed}")
        rng = read_back(child(folder, "rng.json"), _checked_rng)
        adapter = read_back(child(folder, "server_adapter.safetensors"), adapter_from_bytes)
        _apply_rng(rng)
        return Checkpoint(completed, train_calls, adapter)

    # -- zero-shot scores shared between runs ------------------------------------------------------
    def cached_zero_shot(self) -> dict[str, PartyScores]:
        if self.zero_shot_cache is None or not self.zero_shot_cache.is_file():
            return {}
        return read_back(self.zero_shot_cache, lambda data: {key: PartyScores.from_json(v)
                                                            for key, v in json.loads(data).items()})

    def save_zero_shot(self, cache: Evaluation) -> None:
        if self.zero_shot_cache is not None:
            atomic_write_json(self.zero_shot_cache, {key: scores.to_json() for key, scores in cache.items()})
