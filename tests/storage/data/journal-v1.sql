-- A journal as tswarm made it at schema version 1 (before over-the-air updates): made by the SQLite
-- engine of that version (service/storage/sqlite/schema.py, MIGRATIONS = (_to_v1,)), dumped with
-- 'sqlite3 tswarm.db .dump' (which leaves out the version: the PRAGMA below puts it back). Nodes:
-- porch (created, interval 900), attic (halted, never created), gone (removed; its reading stays).
-- tests/storage/test_firmware.py opens it.
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
);
INSERT INTO nodes VALUES(1,'porch','scrypt$1024$8$1$c2FsdA==$porch',1700000000000000001,1700000001000000000,NULL,0,900);
INSERT INTO nodes VALUES(2,'attic','scrypt$1024$8$1$c2FsdA==$attic',1700000000000000002,NULL,NULL,1,300);
INSERT INTO nodes VALUES(3,'gone',NULL,1700000000000000003,NULL,1700000300000000000,0,300);
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
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE rejected (    -- readings InfluxDB refused for good (a 400): kept, not retried
    reading_id  INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX readings_node_ts ON readings (node_id, ts);
CREATE INDEX readings_ts ON readings (ts);
PRAGMA user_version = 1;
COMMIT;
