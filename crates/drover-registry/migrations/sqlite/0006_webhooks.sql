-- Webhook subscriptions of applications (drover_model::webhook). `spec` is the JSON spec
-- without the secret, which lives in `secret` (needed in the clear to sign requests; never
-- shown). The other columns are the delivery's state: counters, the last error, whether the
-- Event Grid handshake was done, and which node holds the subscription until when (one node
-- delivers each subscription). Removed with the application (tables::delete_app).
CREATE TABLE webhooks (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    app_uid TEXT NOT NULL,
    spec TEXT NOT NULL,
    secret TEXT,
    created TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retrying INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_time TEXT,
    last_delivery_time TEXT,
    validated INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    held_until TEXT,
    PRIMARY KEY (app, name)
);

-- Events a subscription gave up on after its retry budget, with the last failure. The newest
-- rows of each subscription are kept (webhooks::MAX_DEAD_LETTERS); they go with it.
CREATE TABLE webhook_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_uid TEXT NOT NULL,
    app TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    device TEXT NOT NULL,
    event TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX webhook_dead_letters_by_webhook ON webhook_dead_letters (webhook_uid, seq);
