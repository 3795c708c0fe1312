import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smol_tok():
    from fedmkt.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_tok():
    from fedmkt.models import load_tokenizer

    return load_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def mmlu():
    from fedmkt.data.mmlu import load_mmlu

    return load_mmlu()
