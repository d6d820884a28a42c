//! `drover migrate`: moves an embedded installation (the SQLite registry and the embedded event
//! log in the data directory) to a cluster's PostgreSQL registry and NATS JetStream event log,
//! losslessly, while the server is stopped.
//!
//! The order of the steps keeps a failure cheap to recover from:
//!
//! 1. open the SQLite registry for this process alone (fails while a server has it open) and the
//!    embedded log without retention (nothing is pruned while it is read);
//! 2. copy the registry as a dry run (checks that the target is empty and that every row fits,
//!    then rolls back);
//! 3. check that every JetStream stream to be filled is empty;
//! 4. copy each application's retained events in order, then its groups' offsets, translated;
//! 5. copy the registry for real, in one transaction.
//!
//! A failure in 1–3 writes nothing; in 4 it leaves the registry empty and some streams filled
//! (delete them or choose another `--nats-prefix`, then run again); 5 fails only if the target
//! changed since 2.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use drover::config::MIGRATE;
use drover::{Config, SettingArgs};
use drover_bus::{
    Consumer, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog, LogConfig, Offset, StartFrom,
    StreamKey,
};
use drover_registry::{
    copy_registry, CopyOptions, MigrationReport, PgOptions, PostgresRegistry, RegistryError,
    SqliteRegistry,
};

/// Exit code for bad usage or configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Events read from the embedded log and appended to JetStream at once.
const BATCH: usize = 256;

/// Flags of `drover migrate`: the data directory and the cluster's settings, named (and read
/// from the environment and the `--config` file) as `drover serve`'s.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data directory, the cluster's settings and the event retention, as `drover serve`
    /// reads them (the same flags, environment variables and configuration file keys).
    #[command(flatten)]
    pub settings: SettingArgs<MIGRATE>,
    /// Read everything and check the targets, write nothing; prints what would be copied.
    #[arg(long)]
    pub dry_run: bool,
    /// Copy the events (the default with --nats-url; without it, an error).
    #[arg(long, conflicts_with = "no_events")]
    pub events: bool,
    /// Do not copy events and group offsets, only the registry.
    #[arg(long)]
    pub no_events: bool,
}

/// A usage or configuration problem: exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Runs `drover migrate`; prints the report, or one line on failure.
pub fn run(args: MigrateArgs) -> ExitCode {
    let failed = |e: anyhow::Error| {
        eprintln!("error: {}", crate::error_line(e.as_ref()));
        if e.is::<Usage>() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::FAILURE
        }
    };
    let plan = match Plan::new(args) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match rt.block_on(plan.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// What to do, from the validated configuration.
struct Plan {
    config: Config,
    database_url: String,
    /// The JetStream log to copy events to (`None`: registry only).
    nats_url: Option<String>,
    dry_run: bool,
}

impl Plan {
    fn new(args: MigrateArgs) -> anyhow::Result<Self> {
        let config = Config::load(args.settings).map_err(|e| Usage(e.0))?;
        let Some(database_url) = config.database_url.clone() else {
            bail!(Usage(
                "drover migrate needs the target registry: set --database-url / DROVER_DATABASE_URL".into()
            ));
        };
        let nats_url = match (&config.nats_url, args.events, args.no_events) {
            (_, _, true) => None,
            (None, true, _) => bail!(Usage(
                "--events needs the target event log: set --nats-url / DROVER_NATS_URL".into()
            )),
            (url, _, _) => url.clone(),
        };
        let registry = config.data_dir.join("registry.db");
        if !registry.is_file() {
            bail!(Usage(format!(
                "there is no embedded registry at {} (set --data-dir / DROVER_DATA_DIR to the data directory of the installation to migrate)",
                registry.display()
            )));
        }
        Ok(Self {
            config,
            database_url,
            nats_url,
            dry_run: args.dry_run,
        })
    }

    async fn run(self) -> anyhow::Result<()> {
        let path = self.config.data_dir.join("registry.db");
        // The error names the file.
        let from = SqliteRegistry::open_exclusive(&path).await?;
        let result = self.migrate(&from).await;
        from.close().await;
        result
    }

    async fn migrate(&self, from: &SqliteRegistry) -> anyhow::Result<()> {
        let target = drover_model::redact_url(&self.database_url);
        let schema = self.config.database_schema.as_deref().unwrap_or("public");
        let to = PostgresRegistry::connect(
            &self.database_url,
            PgOptions {
                schema: self.config.database_schema.clone(),
                max_connections: 2,
                ..PgOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot open the PostgreSQL registry at {target}"))?;
        let result = self.copy(from, &to).await;
        to.close().await;
        let (registry, events) = result?;

        let mode = if self.dry_run {
            "Dry run: nothing was written. Would copy"
        } else {
            "Copied"
        };
        println!(
            "{mode} the registry {} -> PostgreSQL {target} (schema {schema}):",
            self.config.data_dir.join("registry.db").display()
        );
        print_registry(&registry);
        if let Some(events) = events {
            println!(
                "{mode} the events {} -> NATS JetStream {} (prefix {}):",
                self.config.data_dir.join("events").display(),
                drover_model::redact_url(self.nats_url.as_deref().unwrap_or_default()),
                self.config.nats_prefix
            );
            events.print();
        } else {
            println!("Events were not copied (no --nats-url, or --no-events).");
        }
        if !self.dry_run {
            println!(
                "Start the cluster's nodes with --database-url and --nats-url (and the same --database-schema / --nats-prefix); keep the old data directory until they serve."
            );
        }
        Ok(())
    }

    /// Steps 2 to 5 (see the module docs).
    async fn copy(
        &self,
        from: &SqliteRegistry,
        to: &PostgresRegistry,
    ) -> anyhow::Result<(MigrationReport, Option<EventsReport>)> {
        let check = copy_registry(from, to, CopyOptions { dry_run: true })
            .await
            .map_err(registry_error)?;
        let events = match &self.nats_url {
            Some(url) => Some(self.copy_events(url, &check).await?),
            None => None,
        };
        if self.dry_run {
            return Ok((check, events));
        }
        let copied = copy_registry(from, to, CopyOptions { dry_run: false })
            .await
            .map_err(registry_error)
            .context(if events.is_some() {
                "the events were copied, the registry was not"
            } else {
                "the registry was not copied"
            })?;
        Ok((copied, events))
    }

    async fn copy_events(
        &self,
        url: &str,
        registry: &MigrationReport,
    ) -> anyhow::Result<EventsReport> {
        let dir = self.config.data_dir.join("events");
        if !dir.is_dir() {
            // No event was ever stored (and none is created by looking).
            return Ok(EventsReport::default());
        }
        let source = open_embedded(&dir).await?;
        let target = JetStreamLog::connect(JetStreamConfig {
            url: url.to_string(),
            prefix: self.config.nats_prefix.clone(),
            max_age: Duration::from_secs(u64::from(self.config.event_retention_days) * 24 * 3600),
            max_bytes_per_stream: self.config.event_retention_bytes,
            replicas: self.config.nats_replicas,
            connection_name: Some("drover migrate".into()),
            ..JetStreamConfig::default()
        })
        .await
        .with_context(|| {
            format!(
                "cannot open the JetStream event log at {}",
                drover_model::redact_url(url)
            )
        });
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let _ = source.close().await;
                return Err(e);
            }
        };
        let result = copy_streams(&source, &target, registry, self.dry_run).await;
        let closed = source.close().await;
        let _ = target.close().await;
        let report = result?;
        closed.context("closing the embedded event log")?;
        Ok(report)
    }
}

fn registry_error(e: RegistryError) -> anyhow::Error {
    match e {
        RegistryError::Conflict(why) => anyhow::anyhow!("{why}"),
        other => anyhow::Error::new(other).context("copying the registry"),
    }
}

/// The embedded log, opened so that nothing is pruned while it is read.
async fn open_embedded(dir: &Path) -> anyhow::Result<EmbeddedLog> {
    let config = LogConfig {
        max_age: Duration::MAX,
        max_stream_bytes: u64::MAX,
        retention_interval: Duration::from_secs(365 * 24 * 3600),
        ..LogConfig::default()
    };
    EmbeddedLog::open(dir, config)
        .await
        .with_context(|| format!("cannot open the embedded event log {}", dir.display()))
}

/// What was copied of one stream.
struct StreamReport {
    key: StreamKey,
    /// Embedded offsets of the first and last event copied.
    from: Option<(Offset, Offset)>,
    events: u64,
    /// Events JetStream took for duplicates of an earlier one (same event id).
    duplicates: u64,
    /// Group name, embedded offset, JetStream offset.
    groups: Vec<(String, Offset, Offset)>,
}

#[derive(Default)]
struct EventsReport {
    streams: Vec<StreamReport>,
    /// Streams of applications no longer in the registry: not copied.
    skipped: Vec<StreamKey>,
}

impl EventsReport {
    fn print(&self) {
        for s in &self.streams {
            let range = match s.from {
                Some((first, last)) => {
                    format!("offsets {first}..{last} -> 1..{}", s.events - s.duplicates)
                }
                None => "no retained events".into(),
            };
            println!(
                "  {} ({})   {} events, {range}",
                s.key.app, s.key.app_uid, s.events
            );
            if s.duplicates > 0 {
                println!(
                    "    {} duplicates (an event id seen before) kept once",
                    s.duplicates
                );
            }
            for (group, old, new) in &s.groups {
                println!("    group {group:?}: offset {old} -> {new}");
            }
        }
        for key in &self.skipped {
            println!(
                "  skipped the stream {} of a deleted application ({:?})",
                key.app_uid, key.app
            );
        }
        let events: u64 = self.streams.iter().map(|s| s.events).sum();
        let groups: usize = self.streams.iter().map(|s| s.groups.len()).sum();
        println!(
            "  streams {}, events {events}, groups {groups}",
            self.streams.len()
        );
    }
}

/// Copies every stream of an application in the registry (see the module docs, steps 3 and 4).
async fn copy_streams(
    source: &EmbeddedLog,
    target: &JetStreamLog,
    registry: &MigrationReport,
    dry_run: bool,
) -> anyhow::Result<EventsReport> {
    let names: BTreeMap<&str, &str> = registry
        .applications
        .iter()
        .map(|a| (a.uid.as_str(), a.name.as_str()))
        .collect();
    let mut report = EventsReport::default();
    let mut keys = Vec::new();
    for key in source.streams() {
        match names.get(key.app_uid.as_str()) {
            Some(name) => keys.push(StreamKey::new(*name, key.app_uid)),
            None => report.skipped.push(key),
        }
    }
    for key in &keys {
        let end = target
            .consume(key, StartFrom::Earliest)
            .await
            .with_context(|| format!("cannot read the JetStream stream of {}", key.app))?
            .end();
        if end != 0 {
            bail!(
                "the JetStream stream {} of application {} already holds events (up to offset {end}); migrate into an empty NATS account or another --nats-prefix",
                target.stream_name(key),
                key.app
            );
        }
    }
    for key in keys {
        let stream = copy_stream(source, target, key, dry_run)
            .await
            .with_context(|| {
                format!(
                    "the registry was not copied, and the JetStream streams of prefix {} may hold part of the events: delete them (or choose another --nats-prefix) and run again",
                    target.config().prefix
                )
            })?;
        report.streams.push(stream);
    }
    Ok(report)
}

/// Appends the stream's retained events to JetStream in order and commits its groups there, at
/// the new offset of the last event at or before their embedded offset.
async fn copy_stream(
    source: &EmbeddedLog,
    target: &JetStreamLog,
    key: StreamKey,
    dry_run: bool,
) -> anyhow::Result<StreamReport> {
    let end = source.end(&key);
    let groups = source.groups(&key);
    // Group -> (embedded offset, new offset); 0 until an event at or before it is copied.
    let mut translated: Vec<(String, Offset, Offset)> =
        groups.into_iter().map(|(g, o)| (g, o, 0)).collect();
    let mut report = StreamReport {
        key: key.clone(),
        from: None,
        events: 0,
        duplicates: 0,
        groups: Vec::new(),
    };
    let mut last_new: Offset = 0;
    if source.oldest(&key).is_some() {
        let mut reader: Box<dyn Consumer> = source
            .consume(&key, StartFrom::Earliest)
            .await
            .with_context(|| format!("cannot read the embedded stream of {}", key.app))?;
        let mut last_old = 0;
        while last_old < end {
            let batch = reader
                .next_batch(BATCH)
                .await
                .with_context(|| format!("reading the embedded stream of {}", key.app))?;
            let batch: Vec<_> = batch.into_iter().filter(|r| r.offset <= end).collect();
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                bail!(
                    "the embedded stream of {} ended at offset {last_old}, before its end {end}",
                    key.app
                );
            };
            let first_old = first.offset;
            last_old = last.offset;
            let olds: Vec<Offset> = batch.iter().map(|r| r.offset).collect();
            let news: Vec<Offset> = if dry_run {
                (1..=batch.len() as Offset).map(|i| last_new + i).collect()
            } else {
                let events = batch.into_iter().map(|r| r.event).collect();
                let mut news = Vec::with_capacity(olds.len());
                for (i, result) in target
                    .append_batch(&key, events)
                    .await
                    .into_iter()
                    .enumerate()
                {
                    let new = result.with_context(|| {
                        format!("appending event {} of {} to JetStream", olds[i], key.app)
                    })?;
                    news.push(new);
                }
                news
            };
            for &new in &news {
                if new <= last_new {
                    report.duplicates += 1;
                } else {
                    last_new = new;
                }
            }
            translate(&mut translated, &olds, &news);
            report.events += olds.len() as u64;
            report.from = Some((report.from.map_or(first_old, |(f, _)| f), last_old));
        }
    }
    for (group, old, new) in &translated {
        if !dry_run {
            target
                .commit(&key, group, *new)
                .await
                .with_context(|| format!("committing group {group:?} of {}", key.app))?;
        }
        report.groups.push((group.clone(), *old, *new));
    }
    Ok(report)
}

/// Moves each group's new offset to that of the last event of a copied batch at or before its
/// old offset (`olds` ascending, `news` the offsets they were appended at). Batches come in
/// order, so after the last one each group holds the new offset of the last event at or before
/// its old one, or 0 if there was none.
fn translate(groups: &mut [(String, Offset, Offset)], olds: &[Offset], news: &[Offset]) {
    for (_, old, new) in groups {
        let i = olds.partition_point(|o| o <= old);
        if i > 0 {
            *new = news[i - 1];
        }
    }
}

fn print_registry(r: &MigrationReport) {
    let rows = [
        ("applications", r.rows.apps, ""),
        ("devices", r.rows.devices, ""),
        (
            "device names",
            r.rows.device_names,
            "   (names, aliases, unique usernames)",
        ),
        (
            "trust anchors",
            r.rows.trust_anchor_subjects,
            "   (indexed subjects)",
        ),
        ("users", r.rows.users, ""),
        (
            "access tokens",
            r.rows.tokens,
            "   (their hashes: the tokens keep working)",
        ),
        ("change events", r.rows.changes, ""),
        ("device twins", r.rows.twins, ""),
        (
            "twin changes",
            r.rows.twin_outbox,
            "   (not yet in their event streams: appended by the cluster)",
        ),
        ("webhooks", r.rows.webhooks, ""),
        (
            "dead letters",
            r.rows.webhook_dead_letters,
            "   (of webhooks)",
        ),
        (
            "certificates",
            r.rows.certificates,
            "   (issued by the device CA, which is copied too)",
        ),
        ("revocations", r.rows.revocations, ""),
        ("enrollments", r.rows.enrollments, "   (provisioning)"),
        (
            "registrations",
            r.rows.registrations,
            "   (provisioning records)",
        ),
        ("revision", r.revision, ""),
    ];
    for (what, n, note) in rows {
        println!("  {what:<16}{n}{note}");
    }
    if r.compacted > 0 {
        println!(
            "  compacted       {}   (change events up to it had been pruned)",
            r.compacted
        );
    }
    if r.replaced_admin_tokens > 0 {
        println!(
            "  replaced {} token(s) of the target's own 'admin' by the migrated admin's",
            r.replaced_admin_tokens
        );
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn groups_move_to_the_new_offset_of_the_last_event_at_or_before_theirs() {
        let mut groups: Vec<(String, u64, u64)> = [0, 3, 5, 6, 9, 12]
            .into_iter()
            .map(|o| (format!("g{o}"), o, 0))
            .collect();
        // Retention kept old offsets 5..=11; 7 was a duplicate of 6 (stored once).
        translate(&mut groups, &[5, 6, 7], &[1, 2, 2]);
        translate(&mut groups, &[8, 9, 10, 11], &[3, 4, 5, 6]);
        let news: Vec<u64> = groups.iter().map(|g| g.2).collect();
        assert_eq!(news, [0, 0, 1, 2, 4, 6]);
    }
}
