-- A journal as tswarm made it at schema version 2 (over-the-air updates, before telemetry): made by
-- the SQLite engine of that version (main before issue 15: service/storage/sqlite/schema.py,
-- MIGRATIONS = (_to_v1, _to_v2)) through its storage interface, dumped with 'sqlite3 tswarm.db .dump'
-- (which leaves out the version: the PRAGMA below puts it back). Nodes: porch (created, interval 900,
-- running the staged bundle v1), attic (halted, never created), gone (removed; its reading stays).
-- The forward cursor is at reading 2. tests/storage/test_schema.py opens it.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE nodes (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,              -- 'scrypt$n$r$p$salt$hash'; NULL once removed
    registered_at INTEGER NOT NULL,  -- ns since the epoch
    created_at    INTEGER,           -- first POST; NULL: a PUT is answered 405
    removed_at    INTEGER,
    halted        INTEGER NOT NULL DEFAULT 0,
    interval_s    INTEGER NOT NULL DEFAULT 300
, fw_running TEXT, fw_reported_at INTEGER, fw_staged TEXT, fw_staged_at INTEGER, fw_updated_at INTEGER, fw_rolled_back TEXT, fw_rolled_back_at INTEGER);
INSERT INTO nodes VALUES(1,'porch','scrypt$1024$8$1$c2FsdA==$porch',1796137768781015271,1700000001000000000,NULL,0,900,'v1',1700000000700000000,'v1',1700000000600000000,1700000000700000000,NULL,NULL);
INSERT INTO nodes VALUES(2,'attic','scrypt$1024$8$1$c2FsdA==$attic',1796137768781636371,NULL,NULL,1,300,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO nodes VALUES(3,'gone',NULL,1796137768789351118,NULL,1796137768805172305,0,300,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,   -- commit order: the forwarder's cursor
    node_id     INTEGER NOT NULL,
    ts          INTEGER NOT NULL,      -- ns since the epoch, server clock, strictly increasing (unique across nodes)
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL
);
INSERT INTO readings VALUES(1,1,1700000100000000000,21.5,40.0);
INSERT INTO readings VALUES(2,3,1700000100000000001,9.0,90.0);
INSERT INTO readings VALUES(3,2,1700000200000000000,18.5,56.0);
INSERT INTO readings VALUES(4,1,1700000200000000001,22.0,41.0);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta VALUES('forward_cursor','2');
CREATE TABLE rejected (    -- readings InfluxDB refused for good (a 400): kept, not retried
    reading_id  INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at INTEGER NOT NULL
);
CREATE TABLE bundles (
    version    TEXT PRIMARY KEY,     -- service/bundles.py version_of(files)
    created_at INTEGER NOT NULL
);
INSERT INTO bundles VALUES('v1',1700000000500000000);
CREATE TABLE bundle_files (
    version TEXT NOT NULL,
    name    TEXT NOT NULL,           -- the board's file name, no folders
    sha256  TEXT NOT NULL,           -- hex, of content
    content BLOB NOT NULL,
    PRIMARY KEY (version, name)
);
INSERT INTO bundle_files VALUES('v1','node.py','2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881',X'78');
CREATE UNIQUE INDEX readings_node_ts ON readings (node_id, ts);
CREATE INDEX readings_ts ON readings (ts);
PRAGMA user_version = 2;
COMMIT;
