//! PostgreSQL only: several nodes on one database, lost connections, a database that goes away
//! and comes back, and settings that are refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_registry::{PgOptions, PostgresRegistry, Registry, RegistryError};
use serde_json::json;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{admin, eventually, input, Postgres};
use drover_registry::AccessReader as _;

/// Long enough that a test passing within it saw a notification, not a poll.
fn no_polling() -> PgOptions {
    PgOptions {
        poll_interval: Duration::from_secs(600),
        ..PgOptions::default()
    }
}

async fn create_app(reg: &PostgresRegistry, name: &str) -> u64 {
    let app = reg
        .create_app(&admin(), input(json!({"metadata": {"name": name}})))
        .await
        .unwrap();
    app.metadata.resource_version.parse().unwrap()
}

/// Waits until `reg` has seen revision `revision`.
async fn sees(reg: &PostgresRegistry, revision: u64) {
    let mut rx = reg.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| *r >= revision))
        .await
        .unwrap_or_else(|_| panic!("revision {revision} not seen in time"))
        .unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn a_commit_on_one_node_wakes_the_others() {
    let mut pg = Postgres::with(no_polling()).await;
    let b = pg.node(no_polling()).await;
    pg.nodes.push(b.clone());
    let a = pg.nodes[0].clone();
    let rv = create_app(&b, "from-b").await;
    sees(&a, rv).await;
    a.get_app(&admin(), "from-b").await.unwrap();
    let rv = create_app(&a, "from-a").await;
    sees(&b, rv).await;
    // A third node starts from the current revision.
    let c = pg.node(no_polling()).await;
    assert_eq!(*c.subscribe().borrow(), rv);
    pg.nodes.push(c);
    pg.finish().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn nodes_write_in_one_order() {
    let mut pg = Postgres::start().await;
    let b = pg.node(PgOptions::default()).await;
    pg.nodes.push(b);
    create_app(&pg.nodes[0], "app").await;
    let mut tasks = JoinSet::new();
    for i in 0..30 {
        let node = pg.nodes[i % 2].clone();
        tasks.spawn(async move {
            let name = format!("d{i}");
            node.create_device(&admin(), "app", input(json!({"metadata": {"name": name}})))
                .await
                .unwrap();
            node.update_device(
                &admin(),
                "app",
                &name,
                input(json!({"metadata": {"name": name, "labels": {"i": i.to_string()}}})),
            )
            .await
            .unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let feed = pg.nodes[1].changes_since(0, 1000).await.unwrap();
    assert_eq!(feed.len(), 61);
    for (i, c) in feed.iter().enumerate() {
        assert_eq!(c.revision, i as u64 + 1, "contiguous revisions");
    }
    for node in &pg.nodes {
        sees(node, 61).await;
    }
    pg.finish().await;
}

/// What a database restart does to its clients: every connection is terminated.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn connections_the_database_terminates_are_replaced() {
    let mut pg = Postgres::with(no_polling()).await;
    let b = pg.node(no_polling()).await;
    pg.nodes.push(b.clone());
    let a = pg.nodes[0].clone();
    create_app(&a, "before").await;
    let terminate = |name: &str| {
        format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE '{name}'"
        )
    };
    let listeners = format!("drover/{}/listener", pg.schema);
    let listening = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{listeners}' AND query LIKE 'LISTEN%'"
    );
    eventually("both nodes listen", async || {
        pg.query_i64(&listening).await == 2
    })
    .await;
    assert_eq!(pg.query_i64(&terminate(&listeners)).await, 2);
    // Committed while the listeners may be away: read again when they are back.
    let rv = create_app(&b, "during").await;
    sees(&a, rv).await;
    let rv = create_app(&b, "after").await;
    sees(&a, rv).await;
    // Now every connection of both nodes: the next requests get new ones.
    let all = format!("drover/{}%", pg.schema);
    assert!(pg.query_i64(&terminate(&all)).await >= 4);
    a.get_app(&admin(), "after").await.unwrap();
    let rv = create_app(&b, "again").await;
    sees(&a, rv).await;
    a.list_apps(&admin(), &Default::default()).await.unwrap();
    pg.finish().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn polling_catches_what_no_notification_told() {
    let options = PgOptions {
        poll_interval: Duration::from_millis(200),
        ..PgOptions::default()
    };
    let pg = Postgres::with(options).await;
    // A commit that notifies nobody.
    pg.sql("UPDATE meta SET revision = revision + 7").await;
    sees(&pg.nodes[0], 7).await;
    pg.finish().await;
}

/// Another client of the database, in the test's schema.
struct Client(sqlx::PgConnection);

impl Client {
    async fn connect(pg: &Postgres) -> Self {
        let mut client = Client(sqlx::PgConnection::connect(&pg.url).await.unwrap());
        client
            .run(&format!("SET search_path TO {}", pg.schema))
            .await;
        client
    }

    async fn run(&mut self, sql: &str) {
        sqlx::raw_sql(sql).execute(&mut self.0).await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn a_write_gives_up_waiting_for_another_writer() {
    let options = PgOptions {
        lock_timeout: Duration::from_millis(300),
        ..PgOptions::default()
    };
    let pg = Postgres::with(options).await;
    // Another node's write transaction that does not end.
    let mut other = Client::connect(&pg).await;
    other
        .run("BEGIN; SELECT revision FROM meta WHERE id = 1 FOR UPDATE")
        .await;
    let reg = &pg.nodes[0];
    let started = Instant::now();
    let res = reg
        .create_app(&admin(), input(json!({"metadata": {"name": "blocked"}})))
        .await;
    assert_err!(res, Unavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Reads do not wait for writers.
    reg.list_apps(&admin(), &Default::default()).await.unwrap();
    other.run("ROLLBACK").await;
    assert_eq!(create_app(reg, "free").await, 1);
    pg.finish().await;
}

/// A write the database aborts to break a deadlock runs again.
#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn a_deadlocked_write_runs_again() {
    let pg = Postgres::start().await;
    let reg = pg.nodes[0].clone();
    create_app(&reg, "x").await;
    // Someone else locks the application's row (and is slow to see the deadlock, so that the
    // registry's transaction is the one the database aborts)...
    let mut other = Client::connect(&pg).await;
    other
        .run("BEGIN; SET LOCAL deadlock_timeout = '30s'; SELECT name FROM apps WHERE name = 'x' FOR UPDATE")
        .await;
    // ...while the registry, holding the revision counter, waits for that row...
    let update = tokio::spawn(async move {
        let labelled = input(json!({"metadata": {"name": "x", "labels": {"a": "b"}}}));
        reg.update_app(&admin(), "x", labelled).await
    });
    let waiting = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'drover/{}' AND wait_event_type = 'Lock'",
        pg.schema
    );
    eventually("the registry waits for the row", async || {
        pg.query_i64(&waiting).await == 1
    })
    .await;
    // ...and the other one then waits for the counter: a deadlock.
    other
        .run("SELECT revision FROM meta WHERE id = 1 FOR UPDATE; COMMIT")
        .await;
    let updated = update.await.unwrap().unwrap();
    assert_eq!(updated.metadata.labels["a"], "b");
    assert_eq!(updated.metadata.resource_version, "2");
    pg.finish().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn nodes_starting_together_migrate_once() {
    // A schema nobody created yet, and three nodes racing for it.
    let mut pg = Postgres::fresh();
    let (a, b, c) = tokio::join!(
        pg.node(PgOptions::default()),
        pg.node(PgOptions::default()),
        pg.node(PgOptions::default())
    );
    create_app(&a, "x").await;
    b.get_app(&admin(), "x").await.unwrap();
    c.get_app(&admin(), "x").await.unwrap();
    let migrations = pg
        .query_i64(&format!(
            "SELECT COUNT(*) FROM {}._sqlx_migrations",
            pg.schema
        ))
        .await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .count();
    assert_eq!(migrations, files as i64, "each migration ran once");
    pg.nodes = vec![a, b, c];
    pg.finish().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn closing_or_dropping_a_node_ends_its_connections() {
    let pg = Postgres::start().await;
    let connections = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name LIKE 'drover/{}%'",
        pg.schema
    );
    let dropped = pg.node(PgOptions::default()).await;
    dropped.ping().await.unwrap();
    let before = pg.query_i64(&connections).await;
    drop(dropped);
    eventually("the dropped node's connections close", async || {
        pg.query_i64(&connections).await < before
    })
    .await;
    pg.nodes[0].close().await;
    eventually("all connections close", async || {
        pg.query_i64(&connections).await == 0
    })
    .await;
    let res = pg.nodes[0].ping().await;
    assert_err!(res, Unavailable);
    pg.finish().await;
}

/// A TCP proxy to the database that can be cut (as a crashed or restarted server would) and
/// restored on the same port.
struct Proxy {
    port: u16,
    upstream: String,
    connections: Option<JoinSet<()>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let mut proxy = Proxy {
            port: 0,
            upstream,
            connections: None,
        };
        proxy.restore().await;
        proxy
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.port = listener.local_addr().unwrap().port();
        let upstream = self.upstream.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (mut down, _) = listener.accept().await.unwrap();
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        self.connections = Some(set);
    }

    /// Closes the listener and every connection through it.
    fn cut(&mut self) {
        self.connections = None;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn a_database_that_goes_away_is_unavailable_then_recovers() {
    let mut pg = Postgres::start().await;
    let url = url::Url::parse(&pg.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let mut proxy = Proxy::start(upstream).await;
    let mut via = url.clone();
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(proxy.port)).unwrap();
    let options = PgOptions {
        schema: Some(pg.schema.clone()),
        acquire_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_secs(600),
        ..PgOptions::default()
    };
    let a = Arc::new(
        PostgresRegistry::connect(via.as_str(), options)
            .await
            .unwrap(),
    );
    pg.nodes.push(a.clone());
    let b = pg.nodes[0].clone();
    create_app(&a, "before").await;

    proxy.cut();
    let started = Instant::now();
    let res = a.get_app(&admin(), "before").await;
    assert_err!(res, Unavailable);
    let res = a.ping().await;
    assert_err!(res, Unavailable);
    let res = a
        .create_app(&admin(), input(json!({"metadata": {"name": "lost"}})))
        .await;
    assert_err!(res, Unavailable);
    assert!(
        drover_auth::device::DeviceDirectory::device(&*a, "before", "d")
            .await
            .is_err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failures come within the acquire timeout: {:?}",
        started.elapsed()
    );
    // Meanwhile the rest of the cluster goes on.
    let missed = create_app(&b, "meanwhile").await;

    proxy.restore().await;
    eventually("requests succeed again", async || {
        a.get_app(&admin(), "meanwhile").await.is_ok()
    })
    .await;
    // What was committed while the node was cut off reaches its subscribers...
    tokio::time::timeout(
        Duration::from_secs(20),
        a.subscribe().wait_for(|r| *r >= missed),
    )
    .await
    .unwrap()
    .unwrap();
    // (which, without polling, only the listener's return can have told); and so does the
    // next commit elsewhere, by notification.
    let rv = create_app(&b, "after").await;
    sees(&a, rv).await;
    pg.finish().await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let options = PgOptions {
        acquire_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let started = Instant::now();
    let res = PostgresRegistry::connect("postgres://postgres@127.0.0.1:1/test", options).await;
    let Err(RegistryError::Unavailable(reason)) = res else {
        panic!("{:?}", res.map(|_| ()));
    };
    let message = reason.to_string();
    assert!(message.contains("127.0.0.1:1/test"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let res = PostgresRegistry::connect("postgres://host:port/db", PgOptions::default()).await;
    assert_err!(res, BadRequest);
    for schema in ["", "Upper", "1st", "semi;colon", &"x".repeat(49)] {
        let options = PgOptions {
            schema: Some(schema.to_string()),
            ..PgOptions::default()
        };
        let res = PostgresRegistry::connect("postgres://postgres@127.0.0.1:1/test", options).await;
        assert_err!(res, BadRequest);
    }
}
