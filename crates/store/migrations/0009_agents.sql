-- Agents and their configuration.
CREATE TABLE agents_placeholder (id TEXT PRIMARY KEY);
DROP TABLE agents_placeholder;
