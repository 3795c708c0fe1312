"""Every federated method and every selection rule, declared once: names, what they do, report labels and
what each needs. The config validates against these names, the report labels and pairs cells by them, the
Flower ServerApp asks what a method needs; `federation/methods.py` gives each name its class (a test holds
the two tables equal). A new method is an entry here and a class there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str  # what `fedmkt.method` says
    description: str
    label: str  # in reports (FedMKT's own label depends on its options: method_label)
    pools_private: bool = False  # the server reads every client's private data (so it cannot run on Flower
    # with node-local data)
    reference: str | None = None  # its final results are the reference lines of every grid plot: "clients"
    # (each client's) or "server"
    distills: bool = False  # knowledge crosses between the parties (the cells whose SLMs the claims judge)


FEDMKT = MethodInfo("fedmkt", "mutual knowledge transfer (LLM2SLM when llm_training is false)", "FedMKT",
                    distills=True)
STANDALONE = MethodInfo("standalone", "each SLM trains on its own private data, nothing is exchanged", "Standalone",
                        reference="clients")
FEDAVG = MethodInfo("fedavg", "SLMs train on private data and average their LoRA adapters (same base model)",
                    "FedAvg")
CENTRALIZED = MethodInfo("centralized", "the LLM trains on all private data plus the public set, pooled",
                         "Centralized", pools_private=True, reference="server")
METHODS: dict[str, MethodInfo] = {m.name: m for m in (FEDMKT, STANDALONE, FEDAVG, CENTRALIZED)}
LLM2SLM_LABEL = "LLM2SLM"  # FedMKT with a frozen LLM (fedmkt.llm_training: false)

SELECTION_RULES: dict[str, str] = {
    "dual_min_ce": "the sender with the lowest CE, kept only where it beats the receiver's own (DualMinCE)",
    "always": "the lowest-CE sender, whatever the receiver's CE",
    "weighted": "every source, weighted by softmax(-CE)",
}


def method_label(fedmkt: dict) -> str:
    """A run's method as reports name it, from its `fedmkt` config section."""
    info = METHODS[fedmkt.get("method", FEDMKT.name)]
    if info is not FEDMKT:
        return info.label
    label = info.label if fedmkt.get("llm_training", True) else LLM2SLM_LABEL
    return label + (f" + {FEDAVG.label}" if fedmkt.get("fedavg_slms") else "")
