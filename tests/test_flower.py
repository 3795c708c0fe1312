"""FedMKT on a real Flower deployment: SuperLink and two SuperNodes as processes on loopback."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import Phase
from tests.flower_cluster import BIN, CLI_TIMEOUT_S, ROUND_WAIT_S, FlowerCluster, finished, metrics
from tests.tiny import tiny_config

pytestmark = pytest.mark.flower


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One SuperLink and the nodes stem and hum, shared by the tests that run insecure on loopback (each
    test leaves both nodes running for the next)."""
    c = FlowerCluster(tmp_path_factory.mktemp("cluster"))
    c.start_superlink()
    for name in ("stem", "hum"):
        c.start_supernode(name)
    yield c
    c.stop()


def smollm2_server(config: dict) -> dict:
    """A SmolLM2 server: no process of the test loads Gemma-3's 262k-token tokenizer (~5 s each). The TLS
    test keeps the Gemma server, so two tokenizers still meet over Flower there."""
    return {**config, "server": {"source": "tiny:smollm2-135m-instruct"}}


def assert_same_rounds(ours: dict, reference: dict, rounds: int) -> None:
    for r in range(rounds):
        a, b = ours["rounds"][r], reference["rounds"][r]
        for party, loss in b["kd_loss"].items():
            assert a["kd_loss"][party] == pytest.approx(loss, rel=1e-4), (r, party)
        for party, loss in b["private_loss"].items():
            assert a["private_loss"][party] == (None if loss is None else pytest.approx(loss, rel=1e-4)), (r, party)
        for party, evaluation in b["evaluation"].items():
            assert a["evaluation"][party]["mean"]["acc"] == pytest.approx(evaluation["mean"]["acc"]), (r, party)


def run_locally(config: dict, out: Path, mmlu) -> dict:
    """The same federation with the local runner (the reference a Flower run must equal)."""
    return metrics(LocalFederation(parse_config({**config, "output_dir": str(out)}), questions=mmlu).run())


def test_a_client_killed_mid_round_is_dropped_and_the_round_completes(cluster):
    run_dir = cluster.tmp / "runs" / "kill"
    # The default, generous phase timeout: hum must be dropped because its node is gone (its heartbeats stop and
    # the SuperLink answers for it), not because a phase ran long; stem, slow or not, must not be dropped.
    cluster.run(smollm2_server(tiny_config(cluster.tmp / "runs", "kill", rounds=1)))
    shared = cluster.tmp / "nodes" / "hum" / "kill" / "latest" / "hum" / "state.json"
    cluster.wait(lambda: shared.is_file() and json.loads(shared.read_text())["phase"] == Phase.SHARE.value, ROUND_WAIT_S,
                 "client 'hum' to share its knowledge")
    cluster.kill("supernode-hum")  # after sending knowledge, before distilling the LLM's
    cluster.wait(finished(run_dir, 1), ROUND_WAIT_S, "the round to complete without 'hum'")
    record = metrics(run_dir)["rounds"][0]
    assert "hum" in record["dropped"] and "stem" not in record["dropped"], record["dropped"]
    assert "Node Unavailable" in record["dropped"]["hum"], record["dropped"]  # an event, not a timeout
    assert "stem" in record["kd_loss"] and "server" in record["kd_loss"]
    assert "stem" in record["evaluation"] and "hum" not in record["evaluation"]
    cluster.start_supernode("hum")  # hum's machine comes back for the next test


def test_server_killed_after_round_one_resumes_and_equals_the_local_runner(cluster, tmp_path, mmlu):
    run_dir = cluster.tmp / "runs" / "resume"
    config = smollm2_server(tiny_config(cluster.tmp / "runs", "resume"))
    # The reference first: run beside the cluster on a loaded machine, it let the Flower run finish round 2
    # before the kill below could come (the test then waited for a round-1 checkpoint that had gone by).
    local_reference = run_locally(config, tmp_path / "local", mmlu)
    cluster.run(config)
    checkpoint = run_dir / "checkpoint" / "state.json"
    cluster.wait(lambda: checkpoint.is_file() and json.loads(checkpoint.read_text())["completed_round"] >= 1, ROUND_WAIT_S,
                 "round 1 checkpoint")
    cluster.kill("superlink")  # the ServerApp dies with it
    assert json.loads(checkpoint.read_text())["completed_round"] == 1, "round 2 ended before the kill"
    # stem's machine restarts too (SuperNode and client process): the client reloads its adapters from its
    # store. Its SuperNode goes with it: one that was pulling round 2's first message while the SuperLink
    # went down has been seen (CI, Flower 1.42) to stop fetching messages after the restart.
    cluster.kill("supernode-stem")
    assert len(metrics(run_dir)["rounds"]) == 1
    cluster.start_superlink()
    cluster.start_supernode("stem")
    cluster.run(config, resume=True)
    cluster.wait(finished(run_dir, 2), ROUND_WAIT_S, "the resumed run to finish round 2")
    # Nothing lost or counted twice: the resumed run equals one that never stopped.
    ours = metrics(run_dir)
    assert all(not r["dropped"] for r in ours["rounds"]), [r["dropped"] for r in ours["rounds"]]
    assert_same_rounds(ours, local_reference, 2)
    # The server keeps its adapters in the run folder, each client in its own node's store.
    assert (run_dir / "round-2" / "server" / "adapter_model.safetensors").is_file()
    for client in ("stem", "hum"):
        assert (cluster.tmp / "nodes" / client / "resume" / "round-2" / client / "adapter_model.safetensors").is_file()
        assert not (run_dir / "round-2" / client).exists()
        # One resident process served all of a client's messages (hum's across the server's restart): one model
        # load per process.
        loads = (cluster.tmp / "nodes" / client / "resume" / "loads.jsonl").read_text().splitlines()
        assert len(loads) == (2 if client == "stem" else 1), loads


def eight_clients(out, run_name: str) -> dict:
    config = smollm2_server(tiny_config(out, run_name, rounds=1))
    domains = ("stem", "humanities", "social_sciences", "other")
    config["clients"] = [{"name": f"c{i}", "model": {"source": "tiny:smollm2-135m-instruct"}, "domains": [domains[i % 4]]}
                         for i in range(8)]
    return config


def test_eight_simulated_clients_equal_the_local_runner(tmp_path, mmlu):
    """Flower's Simulation Engine: the same ServerApp and ClientApp, node i is client i of the config; each
    client's model is loaded once by the simulation's worker, and the round equals the local runner's."""
    cluster = FlowerCluster(tmp_path)
    run_dir = tmp_path / "runs" / "sim"
    try:
        cluster.start_superlink(simulation=True)
        config = eight_clients(tmp_path / "runs", "sim")
        config["privacy"] = {"target_epsilon": 8.0}  # DP-SGD on every client, accounted in its node's store
        cluster.run(config, supernodes=8)
        local = run_locally(config, tmp_path / "local", mmlu)
        cluster.wait(finished(run_dir, 1), ROUND_WAIT_S, "8 simulated clients to finish a round")
    finally:
        cluster.stop()
    record = metrics(run_dir)["rounds"][0]
    assert not record["dropped"] and set(record["kd_loss"]) == {"server", *(f"c{i}" for i in range(8))}
    assert_same_rounds(metrics(run_dir), local, 1)
    assert record["privacy"] == local["rounds"][0]["privacy"] and len(record["privacy"]) == 8
    for i in range(8):  # the clients' stores live beside the run on the simulating machine
        assert (run_dir / "nodes" / "sim" / "round-1" / f"c{i}" / "adapter_model.safetensors").is_file()
    loads = (run_dir / "nodes" / "sim" / "loads.jsonl").read_text().splitlines()
    assert len(loads) == 8, loads  # one worker (2 CPUs a client on 2 cores): each client built once


def test_a_simulated_node_is_the_client_of_its_partition():
    from flwr.app import Context, RecordDict

    from fedmkt.federation.flower_client import _node_name

    config = parse_config(tiny_config(Path("runs")))
    def node(config_of_node: dict) -> Context:
        return Context(run_id=1, node_id=5, node_config=config_of_node, state=RecordDict(), run_config={})

    assert _node_name(node({"partition-id": 1, "num-partitions": 2}), config) == "hum"
    assert _node_name(node({"name": "stem", "partition-id": 1}), config) == "stem"  # a SuperNode's own word wins
    with pytest.raises(ValueError, match="num-supernodes=2"):
        _node_name(node({"partition-id": 2, "num-partitions": 3}), config)


def test_a_node_reads_its_data_in_the_yamls_set_syntax(tmp_path):
    from fedmkt.federation.flower_client import node_overrides
    from tests.test_own_data import ROOT

    config = parse_config(tiny_config(Path("runs")))
    csv = str(ROOT / "examples" / "own-data" / "clock" / "private.csv")
    # A mapped CSV with a size and a split, option by option, as a local run's YAML would say it.
    node = {"private-data": csv, "private-columns": '{"prompt": "instruction", "response": "output"}',
            "private-size": 5, "eval-data": csv, "eval-columns": '{"prompt": "instruction", "response": "output"}',
            "eval-shape": "instruction", "eval-size": "3"}
    update = node_overrides(node, config, "stem")
    assert update["domains"] is None and update["private"].size == 5 and update["eval"].size == 3
    assert update["private"].sources[0].columns == {"prompt": "instruction", "response": "output"}
    assert update["eval"].sources[0].shape == "instruction"
    # The same set written whole, in the YAML's own syntax.
    whole = node_overrides({"private-data": f"{{source: {csv}, columns: {{prompt: instruction, response: output}}, "
                                            f"size: 5}}"}, config, "stem")
    assert whole["private"] == update["private"]
    from fedmkt.data.splits import federated_split as split_of
    split = split_of(config.model_copy(update={"clients": [config.clients[0].model_copy(update=update)]}), ["stem"])
    assert len(split.private["stem"]) == 5 and all(q.chat for q in split.private["stem"])  # it loads, mapped
    with pytest.raises(ValueError, match="node config private-size"):
        node_overrides({"private-data": csv, "private-size": "many"}, config, "stem")


def test_a_deployment_over_tls_with_keys_and_node_local_private_data(tmp_path):
    """Production shape. TLS and SuperNode authentication: a registered node claiming another client's name is
    refused, and a client started with the wrong model sends a packet the server drops; the round completes
    with the rest. Each SuperNode reads its private file from a folder named only in its own node config: the
    server's config names no private path, and nothing the server writes (run folder, logs) holds a private
    example."""
    from tests.flower_cluster import self_signed_tls, supernode_keys
    from tests.test_own_data import EXAMPLE, write_jsonl

    private = {}
    for name in ("stem", "hum"):
        rows = [{"prompt": f"Ticket {name}-{i}: the printer on floor {i} jams.", "response": f"Clear tray {i} for {name}."}
                for i in range(8)]
        private[name] = write_jsonl(tmp_path / f"home-{name}" / "notes.jsonl", rows)
    held_out = write_jsonl(tmp_path / "home-stem" / "held-out.jsonl",
                           [{"prompt": f"Ticket stem-x{i}: no paper.", "response": "Refill it."} for i in range(2)])
    tls = self_signed_tls(tmp_path / "tls")
    keys = {name: supernode_keys(tmp_path / "tls", name) for name in ("stem", "hum", "spoof")}
    cluster = FlowerCluster(tmp_path, tls=tls, superlink_args=("--enable-supernode-auth",),
                            supernode_args={n: ("--auth-supernode-private-key", str(k[0])) for n, k in keys.items()})
    try:
        cluster.start_superlink()
        registering = [subprocess.Popen([str(BIN / "flwr"), "supernode", "register", str(public), "local"],
                                        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                       for _, public in keys.values()]  # side by side: each is a CLI start of a few seconds
        for registered in registering:
            out, _ = registered.communicate(timeout=CLI_TIMEOUT_S)
            assert registered.returncode == 0, out
        cluster.start_supernode("stem", node_config=f'private-data="{private["stem"]}" eval-data="{held_out}" '
                                                    f'privacy-epsilon=4')  # its own DP budget
        cluster.start_supernode("spoof", claim="stem")  # authenticated, but with its own key, not stem's
        cluster.start_supernode("hum", node_config=f'private-data="{private["hum"]}" model="tiny:gemma3-270m"')
        config = tiny_config(tmp_path / "runs", "own", rounds=1)
        for client in config["clients"]:
            del client["domains"]  # the server's config says nothing of the clients' data
            client["public_key"] = str(keys[client["name"]][1])
        config["data"] = {"public": {"source": str(EXAMPLE / "public.jsonl"), "size": 6},
                          "evaluation": {"quiz": {"source": str(EXAMPLE / "quiz.jsonl"), "size": 3}}}
        started = cluster.run(config)
        run_dir = tmp_path / "runs" / "own"
        cluster.wait(finished(run_dir, 1), ROUND_WAIT_S, "one round over TLS with node-local private data")
        record = metrics(run_dir)["rounds"][0]
        assert "stem" in record["kd_loss"] and set(record["selection"]["server"]) == {"self", "stem"}
        assert "tokenizer mismatch" in record["dropped"]["hum"]  # hum's node runs a model of another tokenizer
        # stem (SmolLM2) and the server (Gemma-3) align each other's knowledge across tokenizers over Flower.
        assert record["aligned_fraction"]["server"]["stem"] > 0.5 and record["aligned_fraction"]["stem"]["server"] > 0.5
        # Two nodes claimed "stem": without the key check neither would be accepted (and stem would have no
        # kd_loss above); the spoofing node was refused and never served the run.
        assert not (tmp_path / "nodes" / "spoof").exists() and (tmp_path / "nodes" / "stem").is_dir()
        assert record["evaluation"]["stem"]["own"]["n"] == 2
        assert 0 < record["privacy"]["stem"]["epsilon"] <= 4 and record["private_loss"]["stem"] is None
        written = [(path, path.read_text(errors="replace")) for path in run_dir.rglob("*")
                   if path.is_file() and path.suffix in (".json", ".yaml", ".md", ".log", ".txt")]
        written += [(log, log.read_text(errors="replace")) for log in tmp_path.glob("*.log")
                    if "supernode" not in log.name and "resident" not in log.name]  # the nodes' own logs
        written.append((tmp_path / "own.yaml", (tmp_path / "own.yaml").read_text()))  # the server's config
        run_id = re.search(r"Successfully started run (\d+)", started).group(1)
        log = subprocess.run([str(BIN / "flwr"), "log", run_id, "local", "--show"], env=cluster.env,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_S).stdout
        assert "round 1/1" in log  # the ServerApp's own log, as the SuperLink keeps it
        assert re.search(r"client stem: epsilon \d\.\d{3} spent", log)  # each DP client's report, logged
        written.append((tmp_path / "serverapp.log", log))
        for path, text in written:
            assert "home-" not in text and "Ticket" not in text and "Clear tray" not in text, path
    finally:
        cluster.stop()


def test_the_resident_executor_refuses_an_unencrypted_runtime_api_unless_told():
    from typer.testing import CliRunner

    from fedmkt.cli import app

    result = CliRunner().invoke(app, ["flower-clientapp", "--runtime-api-address", "10.0.0.7:9094"])
    assert result.exit_code == 2 and "--insecure" in result.output


def test_an_untested_flower_is_refused_at_start_up_naming_the_internals_used(monkeypatch):
    from typer.testing import CliRunner

    from fedmkt.cli import app
    from fedmkt.federation import flower_support
    from fedmkt.federation.flower_support import ALLOW_ENV, UntestedFlower, check_flower

    assert check_flower() == __import__("flwr").__version__  # the installed one is the tested one
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(UntestedFlower, match=r"(?s)Flower 1\.43\.0 is installed.*flwr>=1\.42,<1\.43.*run_clientapp"):
        check_flower("1.43.0")
    with pytest.raises(UntestedFlower):
        check_flower("1.41.2")
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert check_flower("1.43.0") == "1.43.0"  # the user's word, at their risk
    monkeypatch.delenv(ALLOW_ENV)
    monkeypatch.setattr(flower_support, "TESTED", ">=9.0")  # as if the installed Flower were a newer one's
    result = CliRunner().invoke(app, ["flower-clientapp", "--insecure"])
    assert result.exit_code == 2 and "fedmkt is tested with flwr>=9.0" in result.output
    # pyproject pins the range the check states.
    from tests.flower_cluster import ROOT
    assert '"flwr[simulation]>=1.42,<1.43"' in (ROOT / "pyproject.toml").read_text()
