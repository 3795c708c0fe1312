import pytest

from fedmkt.config import ConfigError, RunConfig, load_config, parse_config


def test_default_is_the_papers_setting():
    cfg = RunConfig()
    assert cfg.server.source == "gemma3-270m"
    assert [c.model.source for c in cfg.clients] == ["smollm2-135m-instruct"] * 2
    assert cfg.fedmkt.ce_weight == 0.9 and cfg.fedmkt.top_k == 16 and cfg.fedmkt.selection == "dual_min_ce"
    # The default run's task is one these models learn (benchmarks/learning_curve.py): cloze sentiment questions,
    # a client per review domain; public and evaluation sets drawn from the clients' domains (disjoint draws).
    domains = [d for c in cfg.clients for d in c.domains]
    assert domains == ["vader/product_reviews", "vader/movie_reviews"] == cfg.data.eval_domains
    assert cfg.data.public_domains == domains and cfg.data.bigbench_tasks == []  # no BIG-bench download
    assert cfg.data.choice_format == "cloze"
    # A data section written by hand starts from the field defaults (MMLU presets, lettered choices).
    assert parse_config({"data": {"eval_size": 5}}).data.choice_format == "letters"


@pytest.mark.parametrize("data, field", [
    ({"fedmkt": {"ce_weight": 1.5}}, "fedmkt.ce_weight"),
    ({"fedmkt": {"selection": "best"}}, "fedmkt.selection"),
    ({"server": {"source": "x", "device": "tpu"}}, "server.device"),
    ({"clients": [{"name": "a", "domains": []}]}, "clients.0.domains"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"fedmkt": {"rounds": 1, "top_kk": 3}}, "fedmkt.top_kk"),
])
def test_errors_name_the_field(data, field):
    with pytest.raises(ConfigError, match=f"field `{field}`"):
        parse_config(data)


def test_duplicate_client_names_rejected():
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"clients": [{"name": "a", "domains": ["stem"]}, {"name": "a", "domains": ["stem"]}]})


def test_yaml_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fedmkt: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    good = tmp_path / "good.yaml"
    good.write_text("fedmkt:\n  rounds: 3\n  llm_training: false\n")
    cfg = load_config(good)
    assert cfg.fedmkt.rounds == 3 and cfg.fedmkt.llm_training is False


def _alias_bomb(levels: int = 9) -> str:
    """Nine lines that stand for 9**9 (387 million) values once their aliases are expanded."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, cause", [
    (_alias_bomb(), "its aliases expand to more than 100000 values"),
    ("[" * 100_000, "nested deeper than 32 levels"),
    ("seed: 1\n" + "#" * (300 * 1024), "over the limit of 262144"),
    ("seed: [1, 2", "not valid YAML"),
])
def test_a_config_file_beyond_the_bounds_is_refused_naming_the_cause(tmp_path, text, cause):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=cause) as refused:
        load_config(path)
    assert str(path) in str(refused.value)


def test_set_refuses_an_alias_bomb_and_deep_nesting_in_its_value():
    from fedmkt.config_yaml import set_field

    with pytest.raises(ConfigError, match="aliases expand"):
        set_field({}, "data={" + _alias_bomb().replace("\n", ", ") + "}")
    with pytest.raises(ConfigError, match="nested deeper"):
        set_field({}, "seed=" + "[" * 50_000)


def test_the_grids_merge_keys_still_read(tmp_path):
    from fedmkt.grid import load_grid
    from pathlib import Path

    grid, configs = load_grid(Path("experiments/paper-grid.yaml"))
    assert len(configs) == len(grid.cells) > 1
    assert grid.seeds == [0, 1, 2] and grid.equivalence_margin == 0.02
    assert configs["lambda-1"].fedmkt.ce_weight == 1.0 and not configs["llm2slm-one-to-one"].fedmkt.llm_training
    # The paper's four client families (Hub ids, for a GPU): each its own tokenizer family, validated offline.
    grid, configs = load_grid(Path("experiments/paper-families-gpu.yaml"))
    sources = [c.model.source for c in configs["fedmkt-heterogeneous"].clients]
    assert len(set(sources)) == 4 and configs["standalone"].server.source == "meta-llama/Llama-2-7b-hf"
    # The generation grid: two free-text tasks, long prompts kept whole, the one-to-one pair for claim (b).
    grid, configs = load_grid(Path("experiments/paper-grid-generation.yaml"))
    assert grid.seeds == [0, 1, 2] and configs["fedmkt-homogeneous"].train.max_length == 576
    assert configs["llm2slm-one-to-one"].fedmkt.llm_training is False and grid.cells[1].ablates == "fedmkt-homogeneous"
