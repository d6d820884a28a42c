-- The registry's schema (PostgreSQL): the same tables as the SQLite store, with native types.
-- Documents are JSONB, times TIMESTAMPTZ, revisions BIGINT. Names sort bytewise (COLLATE "C"),
-- as in SQLite, so lists come in the same order on both stores.

-- One row: the revision counter. A write transaction locks it first (SELECT ... FOR UPDATE) and
-- moves it before committing, which serializes writers across nodes and makes revisions
-- visible strictly in commit order.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    -- Change events up to this revision were pruned (retention): watching from before is refused.
    compacted BIGINT NOT NULL DEFAULT 0
);
INSERT INTO meta (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created TIMESTAMPTZ NOT NULL
);

-- Access tokens by their SHA-256 hash (authentication looks them up by it).
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    prefix TEXT COLLATE "C" NOT NULL,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created TIMESTAMPTZ NOT NULL,
    description TEXT,
    configured BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX tokens_user ON tokens(user_name, prefix);

CREATE TABLE apps (
    name TEXT COLLATE "C" PRIMARY KEY,
    uid TEXT NOT NULL,
    owner TEXT COLLATE "C",
    transfer_to TEXT COLLATE "C",
    members JSONB NOT NULL DEFAULT '{}',
    members_version TEXT NOT NULL,
    doc JSONB NOT NULL
);

CREATE TABLE devices (
    app TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    uid TEXT NOT NULL,
    doc JSONB NOT NULL,
    PRIMARY KEY (app, name)
);

-- Names a device is found by within its app: its name and aliases (kind 'id'), unique usernames
-- (kind 'username'). Unique per app and kind; device authentication looks devices up here.
CREATE TABLE device_names (
    app TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, kind, value)
);
CREATE INDEX device_names_device ON device_names(app, device);

-- The outbox: one row per change event, written in the transaction of the change.
CREATE TABLE changes (
    revision BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    device TEXT,
    uid TEXT NOT NULL,
    path TEXT NOT NULL,
    resource_version BIGINT NOT NULL,
    time TIMESTAMPTZ NOT NULL
);
CREATE INDEX changes_time ON changes(time);

-- Subject DNs of each application's valid trust anchors: X.509 device authentication finds the
-- application by the client certificate's issuer DN.
CREATE TABLE trust_anchor_subjects (
    app TEXT COLLATE "C" NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (app, subject)
);
CREATE INDEX trust_anchor_subjects_subject ON trust_anchor_subjects(subject);
