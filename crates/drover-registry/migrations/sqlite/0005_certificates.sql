-- The installation's device CA (one row): its certificate and key, PEM. Every node of a
-- cluster reads the same row; the first node to start writes it (unless the operator gives a
-- CA of their own, which is then never stored here).
CREATE TABLE device_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert TEXT NOT NULL,
    key TEXT NOT NULL,
    created TEXT NOT NULL
);

-- Certificates the device CA issued, by SHA-256 fingerprint (lowercase hex). A revoked
-- certificate keeps its row (the CRL lists it); deleting its device revokes it.
CREATE TABLE certificates (
    fingerprint TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    app TEXT NOT NULL,
    app_uid TEXT NOT NULL,
    device TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued TEXT NOT NULL,
    revoked TEXT,
    pem TEXT NOT NULL
);
CREATE INDEX certificates_by_device ON certificates (app, device);

-- Revoked certificates chained to an application's own trust anchors, by fingerprint or serial
-- number (lowercase hex). Gone with the application.
CREATE TABLE revocations (
    app TEXT NOT NULL,
    app_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    device TEXT,
    revoked TEXT NOT NULL,
    PRIMARY KEY (app_uid, kind, value)
);
