-- The device CA, issued certificates and revocations (see the SQLite schema for the meaning of
-- each column).
CREATE TABLE device_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert TEXT NOT NULL,
    key TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL
);

CREATE TABLE certificates (
    fingerprint TEXT COLLATE "C" PRIMARY KEY,
    serial TEXT NOT NULL,
    app TEXT COLLATE "C" NOT NULL,
    app_uid TEXT NOT NULL,
    device TEXT COLLATE "C" NOT NULL,
    subject TEXT NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    not_after TIMESTAMPTZ NOT NULL,
    issued TIMESTAMPTZ NOT NULL,
    revoked TIMESTAMPTZ,
    pem TEXT NOT NULL
);
CREATE INDEX certificates_by_device ON certificates (app, device);

CREATE TABLE revocations (
    app TEXT COLLATE "C" NOT NULL,
    app_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C",
    revoked TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app_uid, kind, value)
);
