"""fedmkt: federated mutual knowledge transfer between a server LLM and client SLMs (FedMKT)."""

__version__ = "0.1.0"
