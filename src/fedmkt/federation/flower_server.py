"""FedMKT on Flower: the ServerApp (this module) and the ClientApp (flower_client.py), over the Message API.

The ServerApp runs the same Coordinator as `fedmkt run`, with a transport that sends each phase as
Flower messages through the Grid (one message per client, all in flight at once, a timeout per
phase). The ClientApp serves each message with the same ClientRuntime as the local runner; it keeps
its party in memory while its process lives and its adapters in a local store, so a restarted client
process, or a server resuming from its checkpoint, continues from the last completed round. Flower
1.42 starts a process per message (each reloads the model) unless the SuperNode runs with
`--isolation process` and `fedmkt flower-clientapp` (resident.py) serves its messages: then a client
loads its model once per run. Phases map to Flower message types through `Phase` (protocol.py): the
ClientApp registers one handler each. Before them the ServerApp asks every node which client it is
(`query.who`), then tells each accepted node to build its client (`query.welcome`): model, data and
alignments to the server's tokenizer are ready by the first phase, built while the server loads its own.

Run config (pyproject `[tool.flwr.app.config]` or `flwr run --run-config`):
  config         path of the FedMKT YAML on the server machine (default: the embedded default)
  resume         continue the run folder named by the config after its last checkpoint
  phase-timeout  seconds a client has to answer one phase before it is dropped from the round (a client
                 whose SuperNode stopped heartbeating is dropped as soon as the SuperLink says so)
  join-timeout   seconds to wait for every configured client to connect
Node config: see flower_client.py.

On Flower's Simulation Engine (`flwr run flower_app <simulation connection>`) nodes have no config of
their own: simulated node `partition-id` i is client i of the config (its name and private data), and
`num-partitions` must equal the number of clients; their stores go in the run folder's `nodes/`. The same
ServerApp and ClientApp run; a simulation worker keeps every client of the run it has built.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmkt.config import load_config
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.flower_transport import FlowerTransport
from fedmkt.federation.setup import federated_split, make_server, seed_everything
from fedmkt.federation.store import RunStore
from fedmkt.method_names import METHODS
from fedmkt.progress import LineReporter
from fedmkt.tracking import StepLog

server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    run_config = context.run_config
    config = load_config(run_config.get("config") or None)
    resume = bool(run_config.get("resume", False))
    seed_everything(config.seed)
    # The server reads no client's private data; only a method that pools it does (benchmark presets).
    pools = METHODS[config.fedmkt.method].pools_private
    split = federated_split(config, clients=[c.name for c in config.clients] if pools else [])
    store = RunStore.open(config, resume)
    try:
        reporter = LineReporter()
        transport = FlowerTransport(grid, config, float(run_config.get("phase-timeout", 600)),
                                    float(run_config.get("join-timeout", 120)), reporter)
        server = make_server(config, split)
        server.progress.step_log = StepLog(store.steps, config.tracking.report_to, store.root.name)
        metrics = Coordinator(config, server, split, transport, store, reporter).run(resume=resume)
        store.write_summary(metrics)
    finally:
        store.close()
