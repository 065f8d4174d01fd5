//! Database helpers for the tests against PostgreSQL and MariaDB: the machine's servers
//! (127.0.0.1:5432, user postgres, trust; 127.0.0.1:3306, root, no password), a client
//! connection with sqlx, and a database of a test's own, dropped at the end.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection as _;

/// PostgreSQL or MariaDB/MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pg,
    My,
}

/// A server: the machine's own, or one a test started.
#[derive(Debug, Clone)]
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    pub user: &'static str,
    /// Connections must use TLS.
    pub tls: bool,
}

/// The machine's PostgreSQL.
pub const SHARED_PG: Server = Server {
    kind: Kind::Pg,
    port: 5432,
    user: "postgres",
    tls: false,
};

/// The machine's MariaDB.
pub const SHARED_MY: Server = Server {
    kind: Kind::My,
    port: 3306,
    user: "root",
    tls: false,
};

/// Runs `f` to its end on a runtime of its own.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An identifier quoted for `kind` (PostgreSQL keeps the case of a quoted name).
pub fn quote(kind: Kind, ident: &str) -> String {
    match kind {
        Kind::Pg => format!("\"{ident}\""),
        Kind::My => format!("`{ident}`"),
    }
}

/// A client connection (the tests' own, with sqlx as the relay).
pub enum Db {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Db {
    /// Connects to `database` on `server` (PostgreSQL's `postgres` or no database when none).
    pub async fn connect(server: &Server, database: Option<&str>) -> Result<Self, sqlx::Error> {
        match server.kind {
            Kind::Pg => {
                let o = sqlx::postgres::PgConnectOptions::new()
                    .host("127.0.0.1")
                    .port(server.port)
                    .username(server.user)
                    .database(database.unwrap_or("postgres"))
                    .ssl_mode(if server.tls {
                        sqlx::postgres::PgSslMode::Require
                    } else {
                        sqlx::postgres::PgSslMode::Disable
                    });
                Ok(Self::Pg(sqlx::PgConnection::connect_with(&o).await?))
            }
            Kind::My => {
                let mut o = sqlx::mysql::MySqlConnectOptions::new()
                    .host("127.0.0.1")
                    .port(server.port)
                    .username(server.user)
                    .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
                if let Some(d) = database {
                    o = o.database(d);
                }
                Ok(Self::My(sqlx::MySqlConnection::connect_with(&o).await?))
            }
        }
    }

    /// Connects or fails the test saying which server is missing.
    pub async fn must_connect(server: &Server, database: Option<&str>) -> Self {
        match Self::connect(server, database).await {
            Ok(c) => c,
            Err(e) => panic!(
                "{}: cannot connect to {} on 127.0.0.1:{} as {} ({e}); these tests need the server running",
                module_path!(),
                match server.kind {
                    Kind::Pg => "PostgreSQL",
                    Kind::My => "MariaDB/MySQL",
                },
                server.port,
                server.user
            ),
        }
    }

    /// Runs `sql` (one or more statements); fails the test on an error.
    pub async fn exec(&mut self, sql: &str) {
        let r = match self {
            Self::Pg(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()),
            Self::My(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()),
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs one statement with `params` bound in order; fails the test on an error.
    pub async fn exec_with(&mut self, sql: &str, params: &[Option<String>]) {
        let r = match self {
            Self::Pg(c) => {
                let mut q = sqlx::query(sql);
                for p in params {
                    q = q.bind(p.clone());
                }
                q.execute(&mut *c).await.map(|_| ())
            }
            Self::My(c) => {
                let mut q = sqlx::query(sql);
                for p in params {
                    q = q.bind(p.clone());
                }
                q.execute(&mut *c).await.map(|_| ())
            }
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Closes the connection (an error is ignored).
    pub async fn close(self) {
        let _ = match self {
            Self::Pg(c) => c.close().await,
            Self::My(c) => c.close().await,
        };
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own on `server`, without tables; dropped with the value.
pub struct TestDb {
    pub server: Server,
    pub name: String,
}

impl TestDb {
    /// Creates `cdrrelay_{tag}_{pid}_{n}` on `server`.
    pub fn create_empty(server: &Server, tag: &str) -> Self {
        let name = format!(
            "cdrrelay_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let db = Self {
            server: server.clone(),
            name,
        };
        block_on(async {
            let mut admin = Db::must_connect(server, None).await;
            admin.exec(&format!("CREATE DATABASE {}", db.name)).await;
            admin.close().await;
        });
        db
    }

    /// A connection to this database.
    pub async fn conn(&self) -> Db {
        Db::must_connect(&self.server, Some(&self.name)).await
    }

    /// Runs `sqls` in order on one connection.
    pub fn exec(&self, sqls: &[String]) {
        block_on(async {
            let mut c = self.conn().await;
            for sql in sqls {
                c.exec(sql).await;
            }
            c.close().await;
        });
    }

    /// The relay's settings for this database (no TLS, polled every 200 ms).
    pub fn env(&self) -> Vec<(String, String)> {
        let kind = match self.server.kind {
            Kind::Pg => "postgresql",
            Kind::My => "mariadb",
        };
        [
            ("DB_TYPE", kind),
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", &self.server.port.to_string()),
            ("DB_NAME", &self.name),
            ("DB_USER", self.server.user),
            ("DB_TLS", "disable"),
            ("DB_POLL_MS", "200"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // A panicking test still drops its database; a server that is gone is left alone.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(mut c) = Db::connect(&server, None).await {
                    let sql = match server.kind {
                        Kind::Pg => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        Kind::My => format!("DROP DATABASE IF EXISTS {name}"),
                    };
                    c.exec(&sql).await;
                    c.close().await;
                }
            })
        })
        .join();
    }
}
