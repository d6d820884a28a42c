//! A PostgreSQL outage: retryable errors while it lasts, then recovery.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::mqtt_device;
use crate::node::{ready, Node, WAIT};

/// A port nothing listens on now. Only for PostgreSQL, which cannot pick its own: the server
/// may lose it to another process before it binds, so [`PrivatePostgres`] retries with another.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL server of the test's own (so that it can be stopped): `initdb` in a temporary
/// directory, run as the `postgres` system user (the server refuses to run as root).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    fn bin_dir() -> Option<std::path::PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
            .collect();
        dirs.sort();
        let runuser = Command::new("runuser")
            .args(["-u", "postgres", "--", "true"])
            .status()
            .is_ok_and(|s| s.success());
        dirs.pop().filter(|_| runuser)
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }

    fn start_new() -> PrivatePostgres {
        let bin = Self::bin_dir().expect(
            "this test needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) and runuser",
        );
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let mut pg = PrivatePostgres {
            dir,
            port: unused_port(),
            bin,
        };
        let data = pg.data();
        assert!(pg
            .as_postgres("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"])
            .success());
        // The port may be taken between choosing and binding it: then try another.
        for _ in 0..5 {
            if pg.try_start() {
                return pg;
            }
            pg.port = unused_port();
        }
        panic!(
            "the private PostgreSQL did not start (see {}/log)",
            pg.dir.path().display()
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        assert!(
            self.try_start(),
            "the private PostgreSQL did not start again"
        );
    }

    fn try_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        )
        .success()
    }

    fn stop(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PostgreSQL goes away: the API and devices get 503 / "server unavailable" (retryable),
/// readiness says so, and the node recovers by itself when the database is back, with what was
/// acknowledged before still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_postgres_outage_is_survived() {
    let pg = PrivatePostgres::start_new();
    let node = Node::spawn(&["--database-url", &pg.url()], "off");
    node.create_device("pw1").await;
    let publish = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/telemetry", node.http))
            .basic_auth("dev1@app", Some("pw1"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(publish().await, 202);

    pg.stop();
    let r = node
        .admin(reqwest::Method::GET, "/api/registry/v1alpha1/apps/app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the API says: retry later");
    assert_eq!(publish().await, 503, "devices are told to retry later");
    let (_c, _el, code) = mqtt_device(&node, "dev1", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable);
    assert_eq!(ready(&node).await, 503);

    pg.start();
    let deadline = Instant::now() + WAIT;
    while publish().await != 202 || ready(&node).await != 200 {
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = node
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "what was acknowledged before is there");
    let (_c, _el, code) = mqtt_device(&node, "dev1", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
}
