-- Device twins (see the SQLite schema for the meaning of each column).
CREATE TABLE twins (
    app TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL,
    desired JSONB NOT NULL DEFAULT '{}',
    desired_version BIGINT NOT NULL DEFAULT 1,
    reported JSONB NOT NULL DEFAULT '{}',
    reported_version BIGINT NOT NULL DEFAULT 1,
    tags JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (app, device)
);

CREATE TABLE twin_outbox (
    seq BIGSERIAL PRIMARY KEY,
    app TEXT COLLATE "C" NOT NULL,
    app_uid TEXT NOT NULL,
    device TEXT COLLATE "C" NOT NULL,
    device_uid TEXT NOT NULL,
    section TEXT NOT NULL,
    version BIGINT NOT NULL,
    patch JSONB NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ
);
