-- Device provisioning (Azure DPS compatible). Enrollments say who may provision into which
-- application: individual ones by registration id, groups by group id (their documents hold
-- the attestation: symmetric keys). Registrations record what provisioning did for a
-- registration id. Both go with their application.
CREATE TABLE enrollments (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    app TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX enrollments_by_app ON enrollments (app);

CREATE TABLE registrations (
    registration_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX registrations_by_app ON registrations (app);
CREATE INDEX registrations_by_operation ON registrations (operation_id);
