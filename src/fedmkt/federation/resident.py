"""A resident ClientApp executor: one long-lived process serves every Flower message of a SuperNode.

Flower 1.42 runs a ClientApp in a fresh `flwr-clientapp` process per message: the SuperNode's
SuperExec acquires each task from the SuperNode's Runtime API and starts a process with that task's
token. For FedMKT that is five processes a round per client, each re-importing torch and reloading its
model. Flower has no long-running ClientApp, but a SuperNode started with `--isolation process` leaves
the execution of its tasks to whatever acquires them from its Runtime API. This module does that in
one process: it acquires each ClientApp task with the SuperExec's call and runs it with Flower's own
task functions (pull the message and context, call the app, push the reply and the task's status),
as `flwr-clientapp` would, but in-process. The app (the FAB's `clientapp` component) is loaded once
per FAB, so fedmkt's ClientApp keeps its loaded model and party from one message to the next.

    flower-supernode --superlink HOST:9092 --isolation process --port 9094 --node-config 'name="stem"'
    fedmkt flower-clientapp --runtime-api-address 127.0.0.1:9094 --insecure

If this process dies, start it again: the client reloads its adapters from its node store, exactly as
a restarted `flwr-clientapp` would.

Each task runs in a thread of its own, and only the app call holds a lock: a SuperNode can leave a task
pending whose message it never received (a message of a run stopped while being pulled), and pulling
that task's input waits forever. Flower's SuperExec loses one process to it; here it would otherwise
stop every later task.

It leans on Flower internals (federation/flower_support.py lists them, with why, and refuses an untested
Flower at start-up).
"""

from __future__ import annotations

import threading
import time
from logging import ERROR, INFO

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore import log
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedmkt.federation.flower_support import check_flower
from fedmkt.federation.flower_messages import RESIDENT


def _preload() -> None:
    """Import now, before any task waits, what the first message of every run imports: what fedmkt's ClientApp
    (named by the FAB) stands on, torch, transformers, peft, numba and the federation's client side, and
    transformers' classes of the packaged model families, imported lazily on the first model built (about
    4 s and 3.5 s on a 2-core CPU). A tiny model of each family on the meta device pulls them in without
    weights."""
    import torch
    from transformers import AutoModelForCausalLM

    import fedmkt.federation.coordinator  # noqa: F401
    import fedmkt.federation.setup  # noqa: F401
    from fedmkt.models import PACKAGED, tiny_architecture

    for entry in PACKAGED.values():
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(tiny_architecture(entry, vocab_size=64))


class ResidentExecutor:
    """Acquires the ClientApp tasks of one SuperNode and runs them in this process."""

    def __init__(self, runtime_api_address: str, insecure: bool, root_certificates: str | None = None,
                 poll_interval: float = 0.1):
        check_flower()  # the internals imported above are those of the Flower range tested
        self.address, self.insecure, self.poll_interval = runtime_api_address, insecure, poll_interval
        self.certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
        self.apps: dict[str, ClientApp] = {}  # by FAB hash: loaded once, kept with their module state
        self.app_lock = threading.Lock()  # one app call at a time: a client's party is not shared by threads
        self.tasks_acquired = 0

    def _client(self, *interceptors) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(server_address=self.address, insecure=self.insecure,
                                                     root_certificates=self.certificates,
                                                     interceptors=list(interceptors),
                                                     retry_invoker=make_simple_http_retry_invoker())

    def serve(self, stop: threading.Event | None = None) -> None:
        """Acquire and run tasks until `stop` is set (forever by default)."""
        stop = stop or threading.Event()
        started = time.perf_counter()
        _preload()
        log(INFO, "imported the client side and the model families in %.1fs", time.perf_counter() - started)
        acquirer = self._client(RuntimeVersionHttpInterceptor(component_name="SuperExec"))
        log(INFO, "fedmkt resident ClientApp executor on %s", self.address)
        try:
            while not stop.is_set():
                reply = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
                if reply.HasField("task") and reply.token:
                    self.tasks_acquired += 1
                    threading.Thread(target=self.run_task, args=(reply.token,), daemon=True,
                                     name=f"task-{reply.task.task_id}").start()
                else:
                    stop.wait(self.poll_interval)
        finally:
            acquirer.close()

    def run_task(self, token: str) -> None:
        """One task, as `flwr-clientapp --token` runs it, without leaving the process."""
        client = self._client(RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                              RuntimeTokenHttpInterceptor(token))
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        context: Context | None = None
        reply: Message | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed for an unknown reason"
        try:
            message, context, run, fab = pull_task_input(client)
            with self.app_lock:
                app = self._app(run.fab_id, run.fab_version, fab.hash_str, fab.content)
                context.node_config[RESIDENT] = True  # this process outlives the message: the app may build ahead
                reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as error:  # the task fails, the executor stays: the next message may succeed
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(error, LoadClientAppError) \
                else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(error)}:<'{error}'>"
            log(ERROR, "ClientApp raised an exception", exc_info=error)
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as error:  # the SuperNode is gone or the task expired: nothing to answer
                log(ERROR, "could not push the reply", exc_info=error)
            push_task_output(client, context, status, details)
            heartbeat.stop()
            client.close()

    def _app(self, fab_id: str, fab_version: str, fab_hash: str, content: bytes) -> ClientApp:
        if fab_hash not in self.apps:
            started = time.perf_counter()
            install_from_fab(content, skip_prompt=True)
            self.apps[fab_hash] = get_load_client_app_fn("", None, multi_app=True)(fab_id, fab_version, fab_hash)
            log(INFO, "loaded ClientApp of %s %s in %.1fs", fab_id, fab_version, time.perf_counter() - started)
        return self.apps[fab_hash]

