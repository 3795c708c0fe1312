"""The config as YAML text: `--set field.path=value` edits, nested merges, and the commented YAML that
`fedmkt config` prints (each field's description above it; it reads back to the same config)."""

from __future__ import annotations

import json

import yaml
from pydantic import BaseModel

from fedmkt.config import ConfigError
from fedmkt.yaml_text import YamlRefused, load_yaml


def set_field(data: dict, assignment: str) -> dict:
    """Apply `a.b.c=value` (the value read as YAML) to a config mapping; list items by index
    (`clients.0.model.source=...`). ConfigError names an assignment that does not fit the mapping."""
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set {assignment!r}: expected field.path=value")
    try:
        value = load_yaml(text)
    except YamlRefused as error:
        raise ConfigError(f"--set {assignment[:200]!r}: the value is refused: {error}") from None
    out = json.loads(json.dumps(data, default=str))  # a deep copy that leaves the caller's mapping alone
    node, parts = out, path.strip().split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {path}: `{where}` is not an item of a list of {len(node)}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {path}: `{'.'.join(parts[:depth])}` holds no fields")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]
    return out


def commented_yaml(config: BaseModel, indent: int = 0) -> str:
    """A config as YAML with each field's description as a comment above it: `fedmkt config` prints the
    complete default this way, and it reads back to the same config."""
    lines: list[str] = []
    pad = " " * indent
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel) and all(getattr(value, f) is None for f in type(value).model_fields):
            lines.append(f"{pad}{name}: {{}}")  # an empty override: every field falls back to the run's
        elif isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(commented_yaml(value, indent + 2))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:")
            for item in value:
                body = commented_yaml(item, indent + 4).splitlines()
                first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
                body[first] = f"{pad}  - " + body[first].lstrip()
                lines.extend(body)
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            lines.append(f"{pad}{name}:")
            for key, item in value.items():
                lines.append(f"{pad}  {key}:")
                lines.append(commented_yaml(item, indent + 4))
        else:
            plain = json.loads(json.dumps(value, default=str)) if not isinstance(value, BaseModel) else value
            dumped = yaml.safe_dump(plain, default_flow_style=True, width=10**6).strip()
            if dumped.endswith("\n..."):
                dumped = dumped[:-4].strip()
            lines.append(f"{pad}{name}: {dumped.removesuffix(chr(10) + '...')}")
    return "\n".join(lines)


def merge(base: dict, override: dict) -> dict:
    """Nested mappings merge key by key; anything else in override replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
