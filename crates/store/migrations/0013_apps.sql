-- apps
CREATE TABLE apps_placeholder (id TEXT PRIMARY KEY);
DROP TABLE apps_placeholder;
