-- Runners, workload records and provisioned volumes.
CREATE TABLE runners_placeholder (id TEXT PRIMARY KEY);
DROP TABLE runners_placeholder;
