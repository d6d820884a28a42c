-- Webhook subscriptions and their dead letters (see the SQLite schema for each column).
CREATE TABLE webhooks (
    app TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    app_uid TEXT NOT NULL,
    spec JSONB NOT NULL,
    secret TEXT,
    created TIMESTAMPTZ NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    retrying BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_time TIMESTAMPTZ,
    last_delivery_time TIMESTAMPTZ,
    validated BOOLEAN NOT NULL DEFAULT FALSE,
    holder TEXT,
    held_until TIMESTAMPTZ,
    PRIMARY KEY (app, name)
);

CREATE TABLE webhook_dead_letters (
    seq BIGSERIAL PRIMARY KEY,
    webhook_uid TEXT NOT NULL,
    app TEXT COLLATE "C" NOT NULL,
    stream_offset BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    device TEXT NOT NULL,
    event JSONB NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    time TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_dead_letters_by_webhook ON webhook_dead_letters (webhook_uid, seq);
