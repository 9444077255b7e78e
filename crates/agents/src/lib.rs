//! Agents: the desired configuration the orchestrator assembles workloads from.
