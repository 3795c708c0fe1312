"""Which Flower node is which client: a node claims a name, and where the config binds that name to a SuperNode
authentication key, only the node authenticated with that key may hold it."""

from __future__ import annotations

from pathlib import Path


def public_key_pem(text: str) -> bytes:
    """An OpenSSH public key (its text, or the path of its .pub file) as PEM SubjectPublicKeyInfo bytes,
    the form in which the SuperLink reports a node's authentication key."""
    from cryptography.hazmat.primitives import serialization

    data = Path(text).expanduser().read_bytes() if not text.lstrip().startswith(("ecdsa-", "ssh-")) else text.encode()
    key = serialization.load_ssh_public_key(data.strip())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: bytes, b: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        loaded = serialization.load_pem_public_key(b)
    except ValueError:
        return False
    return loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == a


def resolve_claims(claims: dict[int, str], wanted: set[str], keys: dict[str, bytes],
                   node_keys: dict[int, bytes]) -> tuple[dict[str, int], dict[int, str]]:
    """Which node is which client: ({name: node}, {refused node: why}). A name claimed by two nodes is
    given to neither; a name bound to a key goes only to the node authenticated with that key."""
    by_name: dict[str, list[int]] = {}
    for node, name in claims.items():
        by_name.setdefault(name, []).append(node)
    found, refused = {}, {}
    for name, nodes in by_name.items():
        if name not in wanted:
            for node in nodes:
                refused[node] = f"claims to be '{name}', which is not a client of this run"
            continue
        if name in keys:
            keyed = [n for n in nodes if same_key(keys[name], node_keys.get(n, b""))]
            for node in set(nodes) - set(keyed):
                refused[node] = f"claims to be '{name}' but is not authenticated with that client's public key"
            nodes = keyed
        if len(nodes) > 1:
            for node in nodes:
                refused[node] = f"{len(nodes)} nodes claim to be '{name}'; none is accepted"
        elif nodes:
            found[name] = nodes[0]
    return found, refused
