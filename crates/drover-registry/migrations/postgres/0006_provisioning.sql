-- Device provisioning (see the SQLite schema for the meaning of each column).
CREATE TABLE enrollments (
    kind TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    app TEXT COLLATE "C" NOT NULL,
    doc JSONB NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX enrollments_by_app ON enrollments (app);

CREATE TABLE registrations (
    registration_id TEXT COLLATE "C" PRIMARY KEY,
    app TEXT COLLATE "C" NOT NULL,
    operation_id TEXT NOT NULL,
    doc JSONB NOT NULL
);
CREATE INDEX registrations_by_app ON registrations (app);
CREATE INDEX registrations_by_operation ON registrations (operation_id);
