"""What the two Flower apps agree on (neither imports the other): the record every fedmkt message carries,
the message types exchanged before the phases, what the Simulation Engine tells a node, the run config's hash."""

from __future__ import annotations

import hashlib

from flwr.app import ConfigRecord, Message, RecordDict

RECORD = "fedmkt"  # the ConfigRecord of every message, request or reply
WHO = "query.who"  # which client of the run are you (sent with the run config)
WELCOME = "query.welcome"  # to each accepted node: build the client now, while the server loads its model
PARTITION, PARTITIONS = "partition-id", "num-partitions"  # what the Simulation Engine gives each node
RESIDENT = "fedmkt-resident"  # set in a task's node config by the resident executor (resident.py): this process
# serves every message of its node, so the ClientApp may build a client ahead of its first phase


def record_of(message: Message) -> dict:
    return dict(message.content[RECORD]) if RECORD in message.content else {}


def reply_with(message: Message, payload: dict) -> Message:
    return Message(RecordDict({RECORD: ConfigRecord(payload)}), reply_to=message)


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
