-- tracing
CREATE TABLE tracing_placeholder (id TEXT PRIMARY KEY);
DROP TABLE tracing_placeholder;
