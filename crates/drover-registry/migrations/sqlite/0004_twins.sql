-- Device twins: per device, the desired and reported documents with their versions, and tags.
-- A row exists once the twin was first changed; a device without a row has the empty twin
-- (`Twin::new`: versions 1). Removed with the device (tables::delete_device).
CREATE TABLE twins (
    app TEXT NOT NULL,
    device TEXT NOT NULL,
    desired TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 1,
    reported TEXT NOT NULL DEFAULT '{}',
    reported_version INTEGER NOT NULL DEFAULT 1,
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (app, device)
);

-- Twin changes waiting to be appended to their application's event stream, written in the
-- transaction of the change (nothing is lost between the commit and the append). Rows are
-- deleted once appended; a row whose claim ran out is taken again (events carry a stable id).
CREATE TABLE twin_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    app_uid TEXT NOT NULL,
    device TEXT NOT NULL,
    device_uid TEXT NOT NULL,
    section TEXT NOT NULL,
    version INTEGER NOT NULL,
    patch TEXT NOT NULL,
    time TEXT NOT NULL,
    claimed_until TEXT
);
