//! The one place PostgreSQL connections are set up: the pool every query
//! of this process goes through. (The cluster's dedicated `LISTEN`
//! connection will be made here too, from the same parsed config.)

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::store::StoreError;

/// Connections kept open to the database by one process.
const POOL_SIZE: usize = 16;

/// Descriptors the PostgreSQL store may hold: the pool, the cluster's
/// `LISTEN` connection and the writer's, and a margin for a connection
/// being replaced.
pub const DESCRIPTORS: usize = POOL_SIZE + 8;

/// How long a query waits for a connection, and a new connection for the
/// server, before the operation fails as unreachable. Short: a broker
/// whose database is down must refuse promptly rather than hang senders.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The parsed `postgres://` URL and the pool on it.
pub struct Connector {
    pub config: tokio_postgres::Config,
    pub pool: Pool,
}

/// Parses `url` and makes the pool (no connection is opened yet).
pub fn pool(url: &str) -> Result<Connector, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("the database URL is not valid: {e}")))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("claudemesh-broker");
    // Fast recycling drops connections the server closed (a restart), so
    // the pool reconnects by itself once the database is back.
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(Connector { config, pool })
}

/// `host:port/dbname` of a config, for messages (never the password).
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A `LISTEN` connection: its notifications' payloads arrive on `rx`,
/// which closes when the connection breaks.
pub struct Listening {
    /// Keeps the connection open.
    _client: tokio_postgres::Client,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Opens a connection outside the pool and listens on the cluster's
/// channel.
pub async fn listen(config: &tokio_postgres::Config) -> Result<Listening, StoreError> {
    use futures_util::StreamExt as _;
    use tokio_postgres::AsyncMessage;

    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster's LISTEN connection broke");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", super::notify::CHANNEL))
        .await?;
    Ok(Listening {
        _client: client,
        rx,
    })
}
