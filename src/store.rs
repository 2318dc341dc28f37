//! The app's Redis access: a pool of connections, the two operations the app needs (`GET /` and the
//! health PING), retries on the service's one jittered backoff ([`crate::backoff`]), and the "reset
//! every connection" fault.
//!
//! It owns every Redis socket the service opens, which is why the connection count and the reset
//! live here and not in `faults/`. It must not know about HTTP: errors are [`StoreError`], which
//! `http` maps to 503s.
//!
//! Connections are `redis` multiplexed connections held in a `deadpool` pool with our own manager:
//! - recycling is free (no PING per checkout); a connection that failed is dropped instead of
//!   being returned, and an idle one found dead is replaced at once without a backoff;
//! - every connection belongs to a *generation*; a reset starts a new generation, drops the idle
//!   connections of older ones, and (with `force`) aborts the commands in flight on them, so the
//!   count of connections it reports closed is the number of sockets that really closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use chrono::{DateTime, Utc};
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, Timeouts};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError};
use tokio::sync::{Notify, watch};

use crate::config::RedisConfig;

/// Key holding the sample value `GET /` returns.
pub const DATA_KEY: &str = "chaos_lab:data:sample";
/// Key counting (a sample of) `GET /` requests.
pub const COUNTER_KEY: &str = "chaos_lab:counter:requests";

/// Why a Redis operation failed, in the words of the original lab's error matrix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Redis connection failed: {0}")]
    Connection(String),
    #[error("Redis operation timeout: {0}")]
    Timeout(String),
    #[error("Redis authentication failed: {0}")]
    Auth(String),
    #[error("Redis command failed: {0}")]
    Command(String),
    #[error("Redis client configuration is invalid: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether a new attempt can fix it: not a refused login, a command Redis rejected, or a
    /// configuration mistake.
    fn retryable(&self) -> bool {
        !matches!(self, Self::Auth(_) | Self::Command(_) | Self::Config(_))
    }
}

/// What `reset` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetReport {
    /// Sockets that were open before the reset and are closed now.
    pub connections_closed: usize,
    /// Sockets of the old generation still open when the reset gave up waiting (force=false and a
    /// command still running past the socket timeout). Normally 0.
    pub still_closing: usize,
}

/// Last known state of the Redis link, as seen by the most recent operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

/// Handle to Redis; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: managed::Pool<ConnManager>,
    socket_timeout: Duration,
    /// REDIS_MAX_RETRIES: extra attempts after a failure a new attempt can fix.
    max_retries: usize,
    /// REDIS_BACKOFF_BASE and REDIS_BACKOFF_CAP: the first wait and the longest one.
    backoff_base: Duration,
    backoff_cap: Duration,
    /// Generation of new connections and the generation below which in-flight commands abort.
    reset: watch::Sender<ResetState>,
    tracker: Arc<Tracker>,
    link: AtomicU8,
    last_reset: Mutex<Option<DateTime<Utc>>>,
    /// One reset at a time: two overlapping resets would each count the other's sockets.
    reset_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ResetState {
    generation: u64,
    /// Connections of a generation below this one abort what they are doing (force reset).
    abort_below: u64,
}

/// Counts open sockets per generation; `Notify` wakes a reset waiting for the old ones to close.
#[derive(Default)]
struct Tracker {
    open: Mutex<BTreeMap<u64, usize>>,
    closed: Notify,
}

impl Tracker {
    fn opened(&self, generation: u64) {
        *self.open.lock().unwrap().entry(generation).or_default() += 1;
    }
    fn closed(&self, generation: u64) {
        let mut open = self.open.lock().unwrap();
        if let Some(n) = open.get_mut(&generation) {
            *n -= 1;
            if *n == 0 {
                open.remove(&generation);
            }
        }
        drop(open);
        self.closed.notify_waiters();
    }
    fn total(&self) -> usize {
        self.open.lock().unwrap().values().sum()
    }
    fn below(&self, generation: u64) -> usize {
        self.open.lock().unwrap().range(..generation).map(|(_, n)| n).sum()
    }
}

/// One pooled socket. Dropping it closes the socket (the driver task ends with the last handle).
pub struct Conn {
    conn: MultiplexedConnection,
    generation: u64,
    tracker: Arc<Tracker>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.tracker.closed(self.generation);
    }
}

struct ConnManager {
    client: redis::Client,
    config: AsyncConnectionConfig,
    tracker: Arc<Tracker>,
    reset: watch::Receiver<ResetState>,
}

impl managed::Manager for ConnManager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let generation = self.reset.borrow().generation;
        let conn = self.client.get_multiplexed_async_connection_with_config(&self.config).await?;
        self.tracker.opened(generation);
        Ok(Conn { conn, generation, tracker: self.tracker.clone() })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        if conn.generation < self.reset.borrow().generation {
            return Err(RecycleError::message("connection belongs to a reset generation"));
        }
        Ok(())
    }
}

/// A checked-out connection that goes back to the pool only if it is healthy and current.
struct Lease {
    obj: Option<Object<ConnManager>>,
    broken: bool,
    reset: watch::Receiver<ResetState>,
}

impl Lease {
    fn conn(&self) -> MultiplexedConnection {
        self.obj.as_ref().expect("lease holds its object until drop").conn.clone()
    }
    fn generation(&self) -> u64 {
        self.obj.as_ref().expect("lease holds its object until drop").generation
    }
    fn reused(&self) -> bool {
        self.obj.as_ref().is_some_and(|o| Object::metrics(o).recycle_count > 0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take()
            && (self.broken || obj.generation < self.reset.borrow().generation)
        {
            drop(Object::take(obj)); // detach from the pool: the socket closes now
        }
    }
}

impl Store {
    /// Builds the pool. Opens no connection: Redis may be down at startup, and the first
    /// operation (or the first after Redis comes back) connects.
    ///
    /// `via`: connect to this address instead of resolving `REDIS_HOST` (the local fault proxy);
    /// the host name is still the one TLS verifies. `entra`: token credentials (REDIS_AUTH=entra),
    /// re-sent on every live connection whenever the token is refreshed.
    pub fn new(
        cfg: &RedisConfig,
        via: Option<SocketAddr>,
        entra: Option<crate::azure::EntraRedisAuth>,
    ) -> Result<Self, StoreError> {
        // redis' rustls needs a process-wide crypto provider; a second install is a harmless no-op.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

        let scheme = if cfg.redis_ssl { "rediss" } else { "redis" };
        let mut info = format!("{scheme}://{}:{}/", cfg.redis_host, cfg.redis_port)
            .into_connection_info()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.redis_username {
            settings = settings.set_username(user);
        }
        if let Some(pass) = &cfg.redis_password {
            settings = settings.set_password(pass);
        }
        info = info.set_redis_settings(settings);

        let client = match &cfg.redis_ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| StoreError::Config(format!("cannot read REDIS_CA_CERT {}: {e}", path.display())))?;
                redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| StoreError::Config(e.to_string()))?;

        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.redis_socket_connect_timeout))
            .set_response_timeout(Some(cfg.redis_socket_timeout));
        if let Some(auth) = entra {
            config = config.set_credentials_provider(auth);
        }
        if let Some(addr) = via {
            config = config.set_dns_resolver(Via(addr));
        }

        let tracker = Arc::new(Tracker::default());
        let (reset, reset_rx) = watch::channel(ResetState::default());
        let manager = ConnManager { client, config, tracker: tracker.clone(), reset: reset_rx };
        let pool = managed::Pool::builder(manager)
            .max_size(cfg.redis_max_connections as usize)
            .timeouts(Timeouts {
                // Waiting for a free connection counts against the command's own timeout.
                wait: Some(cfg.redis_socket_timeout),
                // Belt and braces: redis enforces the connect timeout itself.
                create: Some(cfg.redis_socket_connect_timeout + Duration::from_millis(500)),
                recycle: None,
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;

        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                socket_timeout: cfg.redis_socket_timeout,
                max_retries: cfg.redis_max_retries as usize,
                backoff_base: cfg.redis_backoff_base,
                backoff_cap: cfg.redis_backoff_cap,
                reset,
                tracker,
                link: AtomicU8::new(LinkState::Unknown as u8),
                last_reset: Mutex::new(None),
                reset_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The value `GET /` shows: reads the sample key, creating it when missing or empty, and
    /// increments the request counter when `count` is set.
    pub async fn sample_data(&self, count: bool) -> Result<String, StoreError> {
        let value = self
            .with_retries(self.inner.max_retries, move |mut c| async move {
                if count {
                    let (v, _): (Option<String>, i64) =
                        redis::pipe().get(DATA_KEY).incr(COUNTER_KEY, 1).query_async(&mut c).await?;
                    Ok(v)
                } else {
                    redis::cmd("GET").arg(DATA_KEY).query_async::<Option<String>>(&mut c).await
                }
            })
            .await?;
        match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => {
                let v = format!("Data created at {}", crate::timestamp());
                let to_set = v.clone();
                self.with_retries(self.inner.max_retries, move |mut c| {
                    let to_set = to_set.clone();
                    async move { redis::cmd("SET").arg(DATA_KEY).arg(to_set).query_async::<()>(&mut c).await }
                })
                .await?;
                Ok(v)
            }
        }
    }

    /// One PING, no retries: a health check reports the state now, not after backoffs.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        self.with_retries(0, |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await?;
        Ok(started.elapsed())
    }

    /// Closes every pooled connection. `force` aborts commands in flight at once; otherwise
    /// they finish first (bounded by the socket timeout). New operations open new connections.
    pub async fn reset(&self, force: bool) -> ResetReport {
        // Commands in flight end within the socket timeout; the rest is for sockets to close.
        let grace = self.inner.socket_timeout + Duration::from_millis(500);
        let _one_at_a_time = self.inner.reset_lock.lock().await;
        let mut new_generation = 0;
        self.inner.reset.send_modify(|s| {
            s.generation += 1;
            if force {
                s.abort_below = s.generation;
            }
            new_generation = s.generation;
        });
        let before = self.inner.tracker.below(new_generation);
        // Idle connections of old generations: dropping the removed objects closes them.
        drop(self.inner.pool.retain(|c, _| c.generation >= new_generation));

        let deadline = Instant::now() + grace;
        loop {
            let waiter = self.inner.tracker.closed.notified();
            if self.inner.tracker.below(new_generation) == 0 || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), waiter).await;
        }
        let still_closing = self.inner.tracker.below(new_generation);
        *self.inner.last_reset.lock().unwrap() = Some(Utc::now());
        ResetReport { connections_closed: before - still_closing.min(before), still_closing }
    }

    /// Connections open right now (all generations).
    pub fn connection_count(&self) -> usize {
        self.inner.tracker.total()
    }

    /// Whether the last operation reached Redis.
    pub fn link(&self) -> LinkState {
        match self.inner.link.load(Ordering::Relaxed) {
            1 => LinkState::Up,
            2 => LinkState::Down,
            _ => LinkState::Unknown,
        }
    }

    pub fn last_reset(&self) -> Option<DateTime<Utc>> {
        *self.inner.last_reset.lock().unwrap()
    }

    /// Runs `op` on a pooled connection; up to `retries` more times, after the backoff, when it
    /// failed in a way a new attempt can fix. Authentication, command and configuration errors
    /// are returned at once.
    async fn with_retries<T, F, Fut>(&self, retries: usize, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let stale_retry_used = AtomicBool::new(false);
        let (op, stale_retry_used) = (&op, &stale_retry_used);
        let mut retry = 0u32;
        let result = (move || self.attempt(op, stale_retry_used))
            .retry(crate::backoff::backoff(self.inner.backoff_base, self.inner.backoff_cap, retries))
            .when(StoreError::retryable)
            .notify(|e: &StoreError, wait: Duration| {
                retry += 1;
                let wait_ms = wait.as_millis() as u64;
                tracing::debug!(attempt = retry, wait_ms, error = %e, "retrying Redis operation");
            })
            .await;
        match &result {
            Ok(_) => self.inner.link.store(LinkState::Up as u8, Ordering::Relaxed),
            Err(StoreError::Command(_)) => {} // Redis answered: the link is fine
            Err(_) => self.inner.link.store(LinkState::Down as u8, Ordering::Relaxed),
        }
        result
    }

    /// One attempt. An idle socket found dead (Redis restarted, CLIENT KILL, proxy cut) means its
    /// idle siblings are dead too: they are dropped, and a fresh connection gets one try at once,
    /// without spending a retry or a backoff (once per operation: `stale_retry_used`).
    async fn attempt<T, F, Fut>(&self, op: &F, stale_retry_used: &AtomicBool) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        loop {
            let mut lease = self.lease().await?;
            let reused = lease.reused();
            match self.run_on(&mut lease, op).await {
                Ok(v) => return Ok(v),
                Err(None) => {
                    lease.broken = true;
                    return Err(StoreError::Connection("connection closed by a forced redis-reset".into()));
                }
                Err(Some(e)) => {
                    lease.broken = breaks_connection(&e);
                    if reused && e.is_connection_dropped() && !stale_retry_used.swap(true, Ordering::Relaxed) {
                        drop(lease);
                        drop(self.inner.pool.retain(|_, _| false));
                        continue;
                    }
                    return Err(classify(e));
                }
            }
        }
    }

    /// Runs `op` once; `Err(None)` means a forced reset aborted it.
    async fn run_on<T, F, Fut>(&self, lease: &mut Lease, op: &F) -> Result<T, Option<RedisError>>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let generation = lease.generation();
        let mut reset = self.inner.reset.subscribe();
        let aborted = async move {
            let _ = reset.wait_for(|s| s.abort_below > generation).await;
        };
        tokio::select! {
            r = op(lease.conn()) => r.map_err(Some),
            () = aborted => Err(None),
        }
    }

    async fn lease(&self) -> Result<Lease, StoreError> {
        match self.inner.pool.get().await {
            Ok(obj) => Ok(Lease { obj: Some(obj), broken: false, reset: self.inner.reset.subscribe() }),
            Err(PoolError::Backend(e)) => Err(classify(e)),
            Err(PoolError::Timeout(managed::TimeoutType::Wait)) => {
                Err(StoreError::Timeout("no free connection in the pool within REDIS_SOCKET_TIMEOUT".into()))
            }
            Err(PoolError::Timeout(_)) => Err(StoreError::Timeout("connecting to Redis took too long".into())),
            Err(e) => Err(StoreError::Connection(e.to_string())),
        }
    }
}

/// Resolves every host name to one address: how connections are routed through the fault proxy.
struct Via(SocketAddr);

impl redis::io::AsyncDNSResolver for Via {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _host: &'b str,
        _port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let addr = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as Box<dyn Iterator<Item = SocketAddr> + Send>) })
    }
}

/// Errors after which the socket cannot be trusted (a reply may still arrive for a timed-out
/// command, and would be read as the answer to the next one).
fn breaks_connection(e: &RedisError) -> bool {
    !matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::UnexpectedReturnType)
        || e.is_timeout()
        || is_auth(e)
}

fn is_auth(e: &RedisError) -> bool {
    const CODES: [&str; 3] = ["NOAUTH", "WRONGPASS", "NOPERM"];
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| CODES.contains(&c))
        // A pipeline reports its commands' errors inside one aggregate error, without a code.
        || CODES.iter().any(|c| e.to_string().contains(c))
}

/// Maps a client error to the lab's error matrix.
fn classify(e: RedisError) -> StoreError {
    let text = e.to_string();
    if is_auth(&e) {
        StoreError::Auth(text)
    } else if e.is_timeout() {
        StoreError::Timeout(text)
    } else if matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::UnexpectedReturnType) {
        StoreError::Command(text)
    } else {
        StoreError::Connection(text)
    }
}
