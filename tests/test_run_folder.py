"""A run folder as a careless operator or a hostile neighbour leaves it: held by another process, links that
lead outside, damaged files, a kill before the first checkpoint, a full or read-only disk. Each is refused
with the file named, and nothing outside the folder, nor anything already saved, is touched."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedmkt.cli import app
from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.store import DamagedRunFile, RunFolderBusy, RunStore
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mmlu):
    """A tiny run of one round, finished: copy it before changing it."""
    out = tmp_path_factory.mktemp("finished")
    return LocalFederation(parse_config(tiny_config(out, "done", rounds=1)), questions=mmlu).run()


def copied(finished: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / finished.name
    shutil.copytree(finished, target, symlinks=True)
    config = yaml.safe_load((target / "config.yaml").read_text())
    (target / "config.yaml").write_text(yaml.safe_dump({**config, "output_dir": str(target.parent)}))
    return target


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink() and not p.name.startswith(".lock")}


HOLD = """
import sys, time
from fedmkt.config import parse_config
from fedmkt.federation.store import RunStore
store = RunStore.open(parse_config({"output_dir": sys.argv[1], "run_name": "held"}))
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_a_run_folder_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = parse_config({"output_dir": str(tmp_path), "run_name": "held"})
        with pytest.raises(RunFolderBusy, match=f"in use by process {holder.pid} on "):
            RunStore.open(config)
        result = CliRunner().invoke(app, ["run", "--output-dir", str(tmp_path), "--run-name", "held"])
        assert result.exit_code == 2 and f"process {holder.pid}" in result.output
    finally:
        holder.kill()
        holder.wait()
    store = RunStore.open(config)  # the holder is gone: its lock went with it
    store.close()


def test_the_same_process_may_open_its_folder_again_and_close_frees_it(tmp_path):
    from filelock import FileLock, Timeout

    config = parse_config({"output_dir": str(tmp_path), "run_name": "r"})
    first = RunStore.open(config)
    second = RunStore.open(config)  # a runner's second look in one process (a test, a grid) shares the lock
    probe = FileLock(first.root / ".lock")  # another holder: refused while either is open
    with pytest.raises(Timeout):
        probe.acquire(timeout=0)
    first.close()
    with pytest.raises(Timeout):
        probe.acquire(timeout=0)
    second.close()
    probe.acquire(timeout=0)
    probe.release()


def test_resume_through_a_checkpoint_link_leaving_the_folder_touches_nothing_outside(finished, tmp_path):
    run = copied(finished, tmp_path)
    outside = tmp_path / "elsewhere"
    (outside / "round-9").mkdir(parents=True)
    (outside / "round-9" / "keep.txt").write_text("mine")
    shutil.rmtree(run / "checkpoint")
    (run / "checkpoint").symlink_to(outside)
    result = CliRunner().invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and "links that lead outside it (checkpoint ->" in result.output
    assert (outside / "round-9" / "keep.txt").read_text() == "mine" and sorted(os.listdir(outside)) == ["round-9"]


@pytest.mark.parametrize("link", ["summary.md", "plots"])
def test_report_never_writes_through_a_link_leaving_the_folder(finished, tmp_path, link):
    run = copied(finished, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.md").write_text("keep")
    target = run / link
    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    target.symlink_to(outside / "precious.md" if link == "summary.md" else outside)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and f"{link} ->" in result.output
    assert (outside / "precious.md").read_text() == "keep" and os.listdir(outside) == ["precious.md"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


@pytest.mark.parametrize("damage, named, what", [
    (lambda run: (run / "metrics.json").write_text(""), "metrics.json", "JSONDecodeError"),
    (lambda run: (run / "metrics.json").write_text('{"rounds": []}'), "metrics.json", "KeyError"),
    (lambda run: (run / "checkpoint" / "state.json").write_text('{"completed_round": 1}'), "state.json",
     "KeyError: 'server_train_calls'"),
    (lambda run: (run / "checkpoint" / "round-1" / "rng.json").write_text('{"python": 5}'), "rng.json", "TypeError"),
    (lambda run: _truncate(run / "checkpoint" / "round-1" / "server_adapter.safetensors"),
     "server_adapter.safetensors", "is damaged"),
])
def test_damaged_run_files_are_named_and_resume_changes_nothing(finished, tmp_path, mmlu, damage, named, what):
    run = copied(finished, tmp_path)
    damage(run)
    before = fingerprint(run)
    with pytest.raises(DamagedRunFile, match=what) as refused:
        federation = LocalFederation(parse_config(yaml.safe_load((run / "config.yaml").read_text())), resume=True,
                                     questions=mmlu)
        federation.coordinator._restore()
    assert named in str(refused.value)
    result = CliRunner().invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and named in result.output and "Traceback" not in result.output
    assert fingerprint(run) == before


def test_a_kill_in_round_1_before_any_checkpoint_leaves_no_duplicated_steps(finished, tmp_path):
    run = copied(finished, tmp_path)
    shutil.rmtree(run / "checkpoint")  # as if killed in round 1: zero-shot saved, round 1's steps written
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "rounds": []}))
    steps_before = (run / "steps.jsonl").read_text().splitlines()
    assert steps_before and all(json.loads(line)["round"] == 1 for line in steps_before)
    result = CliRunner().invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    keys = [(s["party"], s["what"], s["round"], s["step"]) for s in steps]
    assert len(keys) == len(set(keys)) == len(steps_before)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_is_one_clear_error_naming_the_path(finished, tmp_path, monkeypatch, code, words):
    run = copied(finished, tmp_path)
    before = fingerprint(run)
    real = os.replace

    def refuse(src, dst, *args, **kwargs):
        if str(dst).startswith(str(run)):
            Path(src).unlink(missing_ok=True)
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse)
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run)])  # its first write: the lock's holder file
    assert resumed.exit_code == 2 and f"cannot write the run folder {run}: {words}" in \
        " ".join(resumed.output.split()) and "Traceback" not in resumed.output
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2, result.output
    assert f"cannot write or read {run / 'summary.md'}: {words}" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert {k: v for k, v in fingerprint(run).items() if not k.startswith("plots")} == \
        {k: v for k, v in before.items() if not k.startswith("plots")}
