"""The packaged pretrained models, for real (slow: first use converts GGUF, later loads hit the cache)."""

import numpy as np
import pytest
import torch

from fedmkt.config import FedMKTSpec, LoraSpec, ModelSpec, TrainSpec
from fedmkt.federation.roles import ClientParty, Party, ReceivedPacket
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_models():
    return {name: load_model(ModelSpec(source=name)) for name in ("smollm2-135m-instruct", "gemma3-270m")}


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_pretrained_weights_know_a_fact(real_models, name):
    loaded = real_models[name]
    tok = loaded.tokenizer
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        top = loaded.model(input_ids=ids).logits[0, -1].topk(5).indices.tolist()
    assert " Paris" in [tok.decode([t]) for t in top]


def test_real_knowledge_crosses_tokenizers(real_models, mmlu):
    public, private = mmlu[100:104], mmlu[200:204]
    spec = dict(lora=LoraSpec(), train=TrainSpec(batch_size=2), fedmkt=FedMKTSpec(selection="always"), public=public)
    client = ClientParty("client", real_models["smollm2-135m-instruct"], private=private, **spec)
    server = Party("server", real_models["gemma3-270m"], **spec)
    client.train_private()
    up = KnowledgePacket.from_bytes(client.share_knowledge().to_bytes())
    assert up.topk_ids.shape[1] == 16 and np.all(up.ce > 0)
    stats = server.absorb([server.receive(ReceivedPacket(up, client.tokenizer))])
    assert np.isfinite(stats.loss) and stats.selected["client"] == 1.0
    assert stats.aligned_fraction["client"] > 0.6  # most answer boundaries are shared
    down = server.share_knowledge()
    stats = client.absorb([client.receive(ReceivedPacket(down, server.tokenizer))])
    assert np.isfinite(stats.loss) and stats.aligned_fraction["server"] > 0.6
