-- The registry's schema (SQLite). Resources are stored as their JSON document plus the columns
-- queries need. Every write transaction bumps meta.revision once per change event it appends.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    -- Change events up to this revision were pruned (retention): watching from before is refused.
    compacted INTEGER NOT NULL DEFAULT 0
);
INSERT INTO meta (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created TEXT NOT NULL,
    description TEXT,
    configured INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_user ON tokens(user_name, prefix);

CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    owner TEXT,
    transfer_to TEXT,
    members TEXT NOT NULL DEFAULT '{}',
    members_version TEXT NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE devices (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

-- Names a device is found by within its app: its name and aliases (kind 'id'), unique usernames
-- (kind 'username'). Unique per app and kind.
CREATE TABLE device_names (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (app, kind, value)
);
CREATE INDEX device_names_device ON device_names(app, device);

CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    device TEXT,
    uid TEXT NOT NULL,
    path TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX changes_time ON changes(time);
