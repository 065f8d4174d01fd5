//! Database servers of a test's own, on free ports (for tests that stop and start them):
//! PostgreSQL by initdb and pg_ctl from /usr/lib/postgresql/*/bin (run as the `postgres`
//! user), MariaDB by mariadb-install-db and mariadbd (as root). The same helpers as
//! bins/tests/ami_db.rs, shared here; `available()` says whether the programs are there.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::db::{Db, Kind, Server, block_on};

/// Why a test of its own PostgreSQL cannot run here, if it cannot.
pub fn postgres_missing() -> Option<String> {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().join("bin/initdb").exists())
        })
        .unwrap_or(false);
    if !found {
        return Some("no initdb in /usr/lib/postgresql/*/bin".into());
    }
    if Command::new("runuser")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("no runuser".into());
    }
    None
}

/// Why a test of its own MariaDB cannot run here, if it cannot.
pub fn mariadb_missing() -> Option<String> {
    for prog in ["mariadbd", "mariadb-install-db"] {
        let there = Command::new("sh")
            .args(["-c", &format!("command -v {prog}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !there {
            return Some(format!("no {prog} on the PATH"));
        }
    }
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server of the test's own (initdb into a temporary directory, run as the
/// `postgres` user), stopped and removed when dropped.
pub struct OwnPostgres {
    pub dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    tls: bool,
}

impl OwnPostgres {
    pub fn start(tag: &str) -> Self {
        let pg = Self::init(tag);
        pg.up();
        pg
    }

    /// A server that takes TLS connections only, with this certificate and key (PEM).
    pub fn start_tls(tag: &str, cert: &str, key: &str) -> Self {
        let mut pg = Self::init(tag);
        let data = pg.data();
        std::fs::write(data.join("server.crt"), cert).unwrap();
        std::fs::write(data.join("server.key"), key).unwrap();
        run(Command::new("chown").args([
            "postgres:",
            data.join("server.crt").to_str().unwrap(),
            data.join("server.key").to_str().unwrap(),
        ]));
        run(Command::new("chmod").args(["600", data.join("server.key").to_str().unwrap()]));
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        pg.tls = true;
        pg.up();
        pg
    }

    /// initdb, not started.
    pub fn init(tag: &str) -> Self {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's programs in /usr/lib/postgresql/*/bin")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        bins.sort();
        let bin = bins.pop().expect("initdb in /usr/lib/postgresql/*/bin");
        let dir = super::tempdir(&format!("own-pg-{tag}"));
        run(Command::new("chown").args(["-R", "postgres:", dir.to_str().unwrap()]));
        let pg = Self {
            dir,
            bin,
            port: free_port(),
            tls: false,
        };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, prog: &str, args: &[&str]) {
        run(Command::new("runuser")
            .current_dir(&self.dir)
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(prog))
            .args(args));
    }

    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops at once (no goodbye to the clients).
    pub fn down(&self) {
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn server(&self) -> Server {
        Server {
            kind: Kind::Pg,
            port: self.port,
            user: "postgres",
            tls: self.tls,
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A MariaDB server of the test's own (mariadb-install-db into a temporary directory), killed
/// and removed when dropped.
pub struct OwnMariadb {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl OwnMariadb {
    pub fn start(tag: &str) -> Self {
        let dir = super::tempdir(&format!("own-mariadb-{tag}"));
        run(Command::new("mariadb-install-db").args([
            "--no-defaults",
            &format!("--datadir={}", dir.join("data").display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]));
        let mut m = Self {
            dir,
            port: free_port(),
            child: None,
        };
        m.up();
        m
    }

    pub fn up(&mut self) {
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                &format!("--datadir={}", self.dir.join("data").display()),
                &format!("--port={}", self.port),
                &format!("--socket={}", self.dir.join("sock").display()),
                &format!("--pid-file={}", self.dir.join("pid").display()),
                &format!("--log-error={}", self.dir.join("log").display()),
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let server = self.server();
        while block_on(Db::connect(&server, None)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Killed at once (SIGKILL).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn server(&self) -> Server {
        Server {
            kind: Kind::My,
            port: self.port,
            user: "root",
            tls: false,
        }
    }
}

impl Drop for OwnMariadb {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
