//! Runners: the registry of runners, workload records and provisioned volumes.
