"""Per-step training metrics, as Hugging Face users expect them: one JSON line per optimizer step in
`steps.jsonl` (party, round, what it trained, step, loss, learning rate, tokens/s), and the same scalars
to TensorBoard, Weights & Biases or MLflow when `tracking.report_to` names them (each needs its package)."""

from __future__ import annotations

import json
from pathlib import Path

from fedmkt.files import atomic_write_text

INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install wandb", "mlflow": "pip install mlflow"}


class StepLog:
    """Where training steps go. Call it with a record; `close` flushes the trackers."""

    def __init__(self, path: Path | None, report_to: list[str] | tuple[str, ...] = (), run_name: str = "fedmkt"):
        self.path = path
        self.trackers = [self._open(name, path.parent if path else Path("."), run_name) for name in report_to]

    @staticmethod
    def _open(name: str, directory: Path, run_name: str):
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(directory / "tensorboard"))
                return lambda tag, value, step: writer.add_scalar(tag, value, step)
            if name == "wandb":
                import wandb

                run = wandb.init(project="fedmkt", name=run_name, reinit=True)
                return lambda tag, value, step: run.log({tag: value})
            if name == "mlflow":
                import mlflow

                mlflow.start_run(run_name=run_name)
                return lambda tag, value, step: mlflow.log_metric(tag.replace("/", "."), value, step=step)
        except ImportError:
            raise ImportError(f"tracking.report_to: {name} needs its package; install it with: {INSTALL[name]}") from None
        raise ValueError(f"tracking.report_to: unknown tracker {name!r}; known: {sorted(INSTALL)}")

    def __call__(self, record: dict) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
        for track in self.trackers:
            for key in ("loss", "learning_rate", "tokens_per_s"):
                track(f"{record['party']}/{record['what']}/{key}", record[key], record["step"])


def read_steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def drop_steps_after(path: Path, round_no: int, party: str | None = None) -> None:
    """Forget the steps of rounds after `round_no` (a resume repeats them: without this they would be logged
    twice), of one party only if named. A partly written last line (the crash) goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (int(record.get("round", 0)) <= round_no
                                         or (party is not None and record.get("party") != party)):
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
