-- files
CREATE TABLE files_placeholder (id TEXT PRIMARY KEY);
DROP TABLE files_placeholder;
