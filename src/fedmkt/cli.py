"""`fedmkt` command line: run a federation or an experiment grid, report, export or query a trained party,
prepare models, build vocabulary maps."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="FedMKT: federated mutual knowledge transfer between a server LLM and client SLMs.")
console = Console()
console.soft_wrap = not console.is_terminal  # errors in a log file: one line, a path never split at 80 columns
# Library deprecation chatter (transformers/peft) says nothing a fedmkt user can act on.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


def _fail(error: Exception) -> None:
    if isinstance(error, OSError) and error.filename:  # a disk full or read-only: the path, and what happened
        error = f"cannot write or read {error.filename}: {error.strerror or error} (what was saved before is kept)"
    console.print(f"[bold red]error:[/] {escape(str(error))}")
    raise typer.Exit(code=2)


@app.command()
def run(config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; default: the embedded one"),
        output_dir: Optional[Path] = typer.Option(None, help="where run folders go (overrides the config)"),
        run_name: Optional[str] = typer.Option(None, help="run folder name (default: a timestamp)"),
        resume: Optional[Path] = typer.Option(None, help="continue an interrupted run folder after its last round"),
        set_: list[str] = typer.Option([], "--set", help="override a field, e.g. --set train.learning_rate=1e-4 "
                                                          "--set clients.0.model.source=org/name (repeatable)")) -> None:
    """Run a complete FedMKT federation in this process."""
    from fedmkt.config import ConfigError, RunConfig, load_config, parse_config, read_yaml_mapping
    from fedmkt.config_yaml import merge, set_field
    from fedmkt.federation.methods import RoundFailed
    from fedmkt.knowledge import PacketError
    from fedmkt.models import ModelNotFoundError

    try:
        if resume is not None:
            if set_:
                raise ConfigError("--set cannot change a run being resumed: its config.yaml is what it ran with")
            cfg = load_config(resume / "config.yaml").model_copy(
                update={"output_dir": resume.parent, "run_name": resume.name})
        elif set_:
            # Over the complete default, so that any field (clients.0.model.source) can be set.
            data = merge(RunConfig().model_dump(mode="json"),
                         (read_yaml_mapping(config, "config") or {}) if config is not None else {})
            for assignment in set_:
                data = set_field(data, assignment)
            cfg = parse_config(data)
        else:
            cfg = load_config(config)
        if output_dir is not None:
            cfg = cfg.model_copy(update={"output_dir": output_dir})
        if run_name is not None:
            cfg = cfg.model_copy(update={"run_name": run_name})
        from fedmkt.display import ConsoleReporter
        from fedmkt.federation.local import LocalFederation

        with ConsoleReporter(console) as reporter:
            LocalFederation(cfg, reporter=reporter, resume=resume is not None).run()
    except (ConfigError, ModelNotFoundError, PacketError, OSError, ValueError, RoundFailed) as error:
        _fail(error)


@app.command("config")
def show_config() -> None:
    """Print the complete default config as commented YAML (a starting point for --config)."""
    from fedmkt.config import RunConfig
    from fedmkt.config_yaml import commented_yaml

    print("# fedmkt run config: every field with its default; `fedmkt run --config this.yaml` reads it back")
    print(commented_yaml(RunConfig()))


@app.command()
def experiment(grid: Path = typer.Argument(..., help="grid YAML (see experiments/paper-grid.yaml)"),
               output_dir: Path = typer.Option(Path("runs"), help="the grid's folder goes in here")) -> None:
    """Run an experiment grid (resumable: finished cells are skipped, interrupted ones resume), then report it."""
    from fedmkt.config import ConfigError
    from fedmkt.display import ConsoleReporter
    from fedmkt.experiment import run_grid
    from fedmkt.federation.methods import RoundFailed
    from fedmkt.knowledge import PacketError
    from fedmkt.models import ModelNotFoundError

    try:
        with ConsoleReporter(console) as reporter:
            run_grid(grid, output_dir, reporter)
    except (ConfigError, ModelNotFoundError, PacketError, OSError, ValueError, RoundFailed) as error:
        _fail(error)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder or an experiment grid folder"),
           output: Optional[Path] = typer.Option(None, help="write report.md and plots/ here instead (grids)")) -> None:
    """Write the markdown report and PNG plots of a run or a grid."""
    from fedmkt.report import write_grid_report, write_run_report

    try:
        if (run_dir / "metrics.json").is_file():
            path = write_run_report(run_dir)
        else:
            path = write_grid_report(run_dir, output=output)
    except (OSError, ValueError, KeyError) as error:
        _fail(error)
    console.print(f"wrote {path}")


_PARTY = typer.Option(..., "--party", help="server, or a client's name")
_ROUND = typer.Option(None, "--round", help="the adapter after this round (default: the last saved)")
_ADAPTER = typer.Option(None, help="an adapter folder instead (a Flower client's, from its node's store)")
_BASE = typer.Option(None, help="the base model source instead of the run config's (a node's own model)")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a run folder"), party: str = _PARTY,
           out: Path = typer.Option(..., "--out", help="folder to write (must not exist)"),
           round_no: Optional[int] = _ROUND, adapter: Optional[Path] = _ADAPTER, base: Optional[str] = _BASE,
           adapter_only: bool = typer.Option(False, help="write base/ and adapter/ instead of one merged model")) -> None:
    """Write a trained party as a model folder that plain transformers, peft and lm-eval load offline."""
    from fedmkt.config import ConfigError
    from fedmkt.export import export_party
    from fedmkt.models import ModelNotFoundError

    try:
        path = export_party(run_dir, party, out, round_no, adapter, base, adapter_only)
    except (ConfigError, ModelNotFoundError, FileExistsError, FileNotFoundError, ValueError) as error:
        _fail(error)
    console.print(f"wrote {path} (see its README.md)")


@app.command()
def generate(run_dir: Path = typer.Argument(..., help="a run folder"),
             prompts: list[str] = typer.Argument(..., help="one or more instruction prompts"), party: str = _PARTY,
             round_no: Optional[int] = _ROUND, adapter: Optional[Path] = _ADAPTER, base: Optional[str] = _BASE,
             max_new_tokens: int = typer.Option(128, min=1)) -> None:
    """Answer prompts with a trained party, prompted as in training (chat template, system prompt)."""
    from fedmkt.config import ConfigError
    from fedmkt.export import answer, load_party, saved_party
    from fedmkt.models import ModelNotFoundError

    try:
        saved = saved_party(run_dir, party, round_no, adapter, base)
        loaded = load_party(saved)
    except (ConfigError, ModelNotFoundError, FileNotFoundError, ValueError) as error:
        _fail(error)
    for text in answer(saved, loaded, list(prompts), max_new_tokens):
        print(text)


@app.command()
def prepare(models: list[str] = typer.Argument(None, help="model sources (default: the packaged ones)")) -> None:
    """Convert packaged GGUF models to the safetensors cache once (later loads take about a second); with no
    model named, also fetch the default run's data (VADER's sentences)."""
    from fedmkt.config import ModelSpec
    from fedmkt.models import PACKAGED, ModelNotFoundError, load_model

    if not models:  # the default run's data too: after this a default run needs no network
        from fedmkt.data.sources import DataError
        from fedmkt.data.vader import ensure_files

        start = time.perf_counter()
        try:
            ensure_files()
        except (DataError, FileNotFoundError) as error:
            _fail(error)
        console.print(f"VADER sentences (the default run's data): ready in {time.perf_counter() - start:.1f}s")
    for source in models or sorted(PACKAGED):
        start = time.perf_counter()
        try:
            loaded = load_model(ModelSpec(source=source))
        except ModelNotFoundError as error:
            _fail(error)
        params = sum(p.numel() for p in loaded.model.parameters())
        console.print(f"{source}: {params / 1e6:.1f}M parameters, vocab {len(loaded.tokenizer)}, "
                      f"ready in {time.perf_counter() - start:.1f}s")


@app.command()
def align(sender: str = typer.Argument(..., help="sender model source"),
          receiver: str = typer.Argument(..., help="receiver model source")) -> None:
    """Build (or load from cache) the MinED vocabulary map sender -> receiver and print its statistics."""
    import numpy as np

    from fedmkt.alignment.vocab import UNMAPPED, build_vocab_map
    from fedmkt.data.token_text import canonical_tokens
    from fedmkt.models import ModelNotFoundError, load_tokenizer

    try:
        s_tok, r_tok = load_tokenizer(sender), load_tokenizer(receiver)
    except ModelNotFoundError as error:
        _fail(error)
    start = time.perf_counter()
    vmap = build_vocab_map(s_tok, r_tok)
    s_text, r_text = canonical_tokens(s_tok), canonical_tokens(r_tok)
    mapped = vmap.target_ids != UNMAPPED
    console.print(f"{sender} ({len(s_tok)}) -> {receiver} ({len(r_tok)}): {time.perf_counter() - start:.1f}s, "
                  f"exact {vmap.exact_fraction:.1%}, mean distance {vmap.distances[mapped].mean():.2f}, "
                  f"{int((~mapped).sum())} special tokens without a counterpart")
    rng = np.random.default_rng(0)
    inexact = np.flatnonzero(vmap.distances > 0)
    for i in rng.choice(inexact, size=min(5, len(inexact)), replace=False):
        console.print(f"  {s_text[i]!r} -> {r_text[vmap.target_ids[i]]!r} (distance {vmap.distances[i]})")


@app.command("flower-clientapp")
def flower_clientapp(
        runtime_api_address: str = typer.Option("127.0.0.1:9094", help="the SuperNode's Runtime API (its --port)"),
        insecure: bool = typer.Option(False, help="talk to the Runtime API without TLS (loopback)"),
        root_certificates: Optional[Path] = typer.Option(None, help="CA certificate of the Runtime API's TLS")) -> None:
    """Serve every ClientApp message of a SuperNode started with --isolation process from this one process,
    so a client loads its model once per run instead of once per message."""
    from fedmkt.federation.flower_support import UntestedFlower, check_flower

    try:
        check_flower()  # before importing the Flower internals the executor uses
    except UntestedFlower as error:
        _fail(error)
    from fedmkt.federation.resident import ResidentExecutor

    if not insecure and root_certificates is None:
        _fail(ValueError("give --root-certificates for a TLS Runtime API, or --insecure on loopback"))
    ResidentExecutor(runtime_api_address, insecure, str(root_certificates) if root_certificates else None).serve()


def main() -> None:  # pragma: no cover
    sys.exit(app())
