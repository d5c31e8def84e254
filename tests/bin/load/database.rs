//! `--database-url`: the PostgreSQL server the engine nodes share. Each run
//! gets a database of its own, created fresh on that server and dropped
//! afterwards, so that no run sees another's events or configurations.

use std::time::Duration;

use reqwest::Url;
use sqlx::{Connection, PgConnection};

/// `--postgres`: a local server in its default set-up.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long creating or dropping a database may take, connecting included.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The server, as `--database-url` names it: the database in the URL is the
/// one connected to for creating and dropping the runs' databases.
#[derive(Debug, Clone)]
pub struct Server {
    url: Url,
}

impl Server {
    pub fn parse(text: &str) -> Result<Server, String> {
        let url = Url::parse(text).map_err(|e| format!("--database-url {text:?}: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!("--database-url {text:?}: expected a postgres:// URL"));
        }
        if !url.has_host() {
            // A database name could not be put in its path.
            return Err(format!("--database-url {text:?}: name the server's host, e.g. {DEFAULT_URL}"));
        }
        Ok(Server { url })
    }

    /// `host:port`, for the summary (never the password).
    pub fn label(&self) -> String {
        format!("{}:{}", self.url.host_str().unwrap_or_default(), self.url.port().unwrap_or(5432))
    }

    /// Creates a database no one else uses: `sluice_load_<uuid>`, the
    /// uuid's hex digits without hyphens (no quoting surprises in psql).
    pub async fn create(&self) -> Result<Database, String> {
        let name = format!("sluice_load_{}", uuid::Uuid::new_v4().simple());
        self.admin(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|e| format!("cannot create database {name} on {}: {e}", self.label()))?;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Ok(Database { server: self.clone(), name, url: url.to_string() })
    }

    /// Runs one statement outside a transaction (as CREATE and DROP DATABASE
    /// must be) on a connection of its own.
    async fn admin(&self, sql: &str) -> Result<(), String> {
        let work = async {
            let mut connection = PgConnection::connect(self.url.as_str()).await.map_err(|e| e.to_string())?;
            let done = sqlx::raw_sql(sql).execute(&mut connection).await.map(drop).map_err(|e| e.to_string());
            // Closing politely is a nicety; the statement's outcome is what counts.
            let _ = connection.close().await;
            done
        };
        tokio::time::timeout(ADMIN_TIMEOUT, work).await.unwrap_or_else(|_| Err(format!("no answer within {ADMIN_TIMEOUT:?}")))
    }
}

/// A database made for one run.
#[derive(Debug)]
pub struct Database {
    server: Server,
    pub name: String,
    /// What the engine nodes are given.
    pub url: String,
}

impl Database {
    /// Drops the database, best effort: a leftover one costs disk, not the
    /// run, so failing only says how to drop it by hand. Call it once the
    /// nodes are stopped; `WITH (FORCE)` (PostgreSQL 13+) ends connections
    /// the server has not noticed are gone yet.
    pub async fn remove(self) {
        let forced = self.server.admin(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await;
        let Err(forced) = forced else { return };
        // Older servers know no FORCE; by now the killed nodes' backends
        // have usually ended.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(plain) = self.server.admin(&format!("DROP DATABASE IF EXISTS \"{}\"", self.name)).await {
            crate::note(&format!(
                "cannot drop database {} on {} ({forced}; {plain}); drop it by hand: DROP DATABASE \"{}\"",
                self.name,
                self.server.label(),
                self.name
            ));
        }
    }
}
