//! The `local` network backend: an embedded TCP fault proxy between the service and Redis.
//!
//! It owns one listener on 127.0.0.1, every connection forwarded through it to the upstream (the
//! real Redis), and the faults applied to that traffic: block, latency and reset-peer (the
//! "toxics", in Toxiproxy's words). It moves bytes and nothing else: it must not parse Redis
//! commands, and it does not know which run applied a fault or when it should be undone.
//!
//! # Why a blocked proxy accepts, then black-holes
//! An NSG deny drops the client's SYN, so nothing ever answers. A userspace proxy cannot drop a
//! SYN: the kernel completes the TCP handshake before `accept()` returns. So while blocked, the
//! proxy accepts new connections, never connects upstream, never sends a byte, and discards what
//! the client sends. The client's Redis handshake then times out instead of its `connect()` —
//! the same "timeout, not refused" symptom the client library reports behind a real deny.
//! Refusing or resetting would be a fast, different failure, and would test the wrong thing.
//!
//! Connection tasks share the proxy's inner state, never the [`LocalProxy`] itself, so dropping
//! the proxy (or calling [`LocalProxy::shutdown`]) ends the accept loop and every connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{BlockSpec, LatencySpec, NetworkBackend, NetworkFault, NetworkFaultKind};
use crate::faults::FaultError;

/// Beyond this every Redis call times out anyway; that is a block, and should be asked for as one.
const MAX_LATENCY: Duration = Duration::from_secs(60);
/// One read. Latency delays each chunk, so this is also the unit of delay.
const CHUNK: usize = 16 * 1024;

/// What every connection task obeys. Published through a `watch` so that a change reaches
/// tasks parked in a read at once, not at their next chunk.
#[derive(Debug, Clone, Copy, Default)]
struct Effects {
    blocked: bool,
    latency: Duration,
    /// Bumped by each reset: a forwarded connection registered under an older value is cut.
    cuts: u64,
    shutdown: bool,
}

struct ActiveFault {
    fault: NetworkFault,
    /// Latency faults only; kept exact because `fault.latency_ms` is rounded for display.
    latency: Duration,
    /// On tokio's clock, so the expiry timer and `faults()` agree, paused time included.
    expires: Option<Instant>,
    /// The expiry timer, aborted when the fault is cleared early so it does not linger.
    timer: Option<AbortHandle>,
}

impl ActiveFault {
    /// An expired fault may still be listed for the instant before its timer runs; it must
    /// neither show nor act.
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
struct State {
    faults: Vec<ActiveFault>,
    /// Per kind, so ids read "local-block-1", "local-latency-1".
    blocks_applied: u64,
    latencies_applied: u64,
    forwarded: usize,
    blackholed: usize,
}

/// What the proxy and its tasks share.
struct Shared {
    upstream_host: String,
    upstream_port: u16,
    connect_timeout: Duration,
    state: Mutex<State>,
    /// Lock order: `state`, then `effects`; nobody holding `effects` takes `state`.
    effects: watch::Sender<Effects>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves counters and the fault list consistent: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Recomputes the effects from the live faults. Called with the lock held, so what the
    /// tasks obey never disagrees with what `faults()` shows.
    fn publish(&self, state: &State) {
        let now = Instant::now();
        let live = || state.faults.iter().filter(|f| f.live(now));
        let blocked = live().any(|f| f.fault.kind == NetworkFaultKind::Block);
        let latency = live().map(|f| f.latency).max().unwrap_or_default();
        self.effects.send_if_modified(|e| {
            let changed = e.blocked != blocked || e.latency != latency;
            e.blocked = blocked;
            e.latency = latency;
            changed
        });
    }

    fn remove(&self, id: &str) -> Option<ActiveFault> {
        let mut state = self.lock();
        let index = state.faults.iter().position(|f| f.fault.id == id)?;
        let removed = state.faults.remove(index);
        self.publish(&state);
        Some(removed)
    }

    /// Cuts every forwarded connection; returns how many there were.
    fn cut_forwarded(&self, state: &State) -> usize {
        self.effects.send_modify(|e| e.cuts += 1);
        state.forwarded
    }
}

/// The embedded fault proxy: clients connect to [`addr`](Self::addr) instead of Redis.
pub struct LocalProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LocalProxy {
    /// Binds 127.0.0.1 on a free port and starts accepting. Must be called inside a tokio
    /// runtime. Nothing is connected upstream until a client connects, so Redis may be down.
    pub fn start(upstream_host: String, upstream_port: u16, connect_timeout: Duration) -> std::io::Result<Arc<Self>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream_host,
            upstream_port,
            connect_timeout,
            state: Mutex::default(),
            effects: watch::Sender::new(Effects::default()),
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        let proxy = Arc::new(Self { addr, shared });
        info!(proxy = %addr, upstream = %proxy.upstream(), "local network fault proxy started");
        Ok(proxy)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Redis behind the proxy, as "host:port".
    pub fn upstream(&self) -> String {
        let host = &self.shared.upstream_host;
        let port = self.shared.upstream_port;
        // An IPv6 literal needs brackets to stay readable as host:port.
        if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
    }

    /// Connections forwarded to Redis now.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().forwarded
    }

    /// Connections accepted during a block and held without an answer.
    pub fn blackholed_count(&self) -> usize {
        self.shared.lock().blackholed
    }

    pub fn is_blocked(&self) -> bool {
        let now = Instant::now();
        self.shared.lock().faults.iter().any(|f| f.live(now) && f.fault.kind == NetworkFaultKind::Block)
    }

    /// The reply delay in force now, 0 when none.
    pub fn latency_ms(&self) -> u64 {
        let now = Instant::now();
        let state = self.shared.lock();
        let latency = state.faults.iter().filter(|f| f.live(now)).map(|f| f.latency).max().unwrap_or_default();
        latency.as_millis() as u64
    }

    /// Stops accepting and closes every connection. Also what dropping the proxy does.
    pub fn shutdown(&self) {
        let first = self.shared.effects.send_if_modified(|e| !std::mem::replace(&mut e.shutdown, true));
        if first {
            info!(proxy = %self.addr, "local network fault proxy stopped");
        }
    }

    fn target(&self) -> String {
        format!("redis {} via proxy {}", self.upstream(), self.addr)
    }

    /// Records `fault` (its id and expiry are filled in here) and starts its expiry timer.
    fn apply(
        &self,
        mut fault: NetworkFault,
        latency: Duration,
        duration: Option<Duration>,
    ) -> Result<NetworkFault, FaultError> {
        let (expires, expires_at) = expiry(duration)?.unzip();
        let mut state = self.shared.lock();
        let (word, n) = match fault.kind {
            NetworkFaultKind::Block => {
                state.blocks_applied += 1;
                ("block", state.blocks_applied)
            }
            NetworkFaultKind::Latency => {
                state.latencies_applied += 1;
                ("latency", state.latencies_applied)
            }
        };
        fault.id = format!("local-{word}-{n}");
        fault.expires_at = expires_at;
        // Spawning under the lock is fine (no await), and means the timer cannot look for the
        // fault before it is listed.
        let timer = expires.map(|at| {
            let shared = Arc::clone(&self.shared);
            let id = fault.id.clone();
            tokio::spawn(async move {
                let mut effects = shared.effects.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        if shared.remove(&id).is_some() {
                            info!(fault = %id, "network fault expired");
                        }
                    }
                    _ = until(&mut effects, |e| e.shutdown) => {}
                }
            })
            .abort_handle()
        });
        state.faults.push(ActiveFault { fault: fault.clone(), latency, expires, timer });
        self.shared.publish(&state);
        Ok(fault)
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// When a fault of `duration` ends: on tokio's clock for the timer, and on the wall clock for
/// people.
fn expiry(duration: Option<Duration>) -> Result<Option<(Instant, String)>, FaultError> {
    let Some(d) = duration else { return Ok(None) };
    let too_long = || FaultError::Invalid(format!("duration {d:?} is too long; give a shorter one, or none"));
    let at = Instant::now().checked_add(d).ok_or_else(too_long)?;
    let wall = chrono::TimeDelta::from_std(d).ok().and_then(|d| chrono::Utc::now().checked_add_signed(d));
    Ok(Some((at, crate::format_timestamp(wall.ok_or_else(too_long)?))))
}

#[async_trait::async_trait]
impl NetworkBackend for LocalProxy {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn block(&self, spec: BlockSpec) -> Result<NetworkFault, FaultError> {
        let port = self.shared.upstream_port;
        if let Some(other) = spec.port.filter(|&p| p != port) {
            return Err(FaultError::Invalid(format!(
                "the local backend only proxies Redis on port {port}; port {other} cannot be blocked"
            )));
        }
        let fault = NetworkFault {
            id: String::new(),
            kind: NetworkFaultKind::Block,
            target: self.target(),
            started_at: crate::timestamp(),
            expires_at: None,
            run_id: spec.run_id,
            cut_existing: Some(spec.cut_existing),
            latency_ms: None,
        };
        let fault = self.apply(fault, Duration::ZERO, spec.duration)?;
        // Cut after the block is in force, so a cut client's reconnect is black-holed.
        let cut = if spec.cut_existing { self.shared.cut_forwarded(&self.shared.lock()) } else { 0 };
        info!(fault = %fault.id, target = %fault.target, expires_at = ?fault.expires_at, cut, "network block applied");
        Ok(fault)
    }

    async fn latency(&self, spec: LatencySpec) -> Result<NetworkFault, FaultError> {
        if spec.latency.is_zero() || spec.latency > MAX_LATENCY {
            return Err(FaultError::Invalid(format!(
                "latency must be more than 0 and at most {} s; got {} ms",
                MAX_LATENCY.as_secs(),
                spec.latency.as_millis()
            )));
        }
        let fault = NetworkFault {
            id: String::new(),
            kind: NetworkFaultKind::Latency,
            target: self.target(),
            started_at: crate::timestamp(),
            expires_at: None,
            run_id: spec.run_id,
            cut_existing: None,
            latency_ms: Some(spec.latency.as_millis() as u64),
        };
        let fault = self.apply(fault, spec.latency, spec.duration)?;
        info!(fault = %fault.id, target = %fault.target, latency = ?spec.latency, expires_at = ?fault.expires_at, "network latency applied");
        Ok(fault)
    }

    async fn reset_peers(&self) -> Result<usize, FaultError> {
        let cut = self.shared.cut_forwarded(&self.shared.lock());
        info!(proxy = %self.addr, cut, "established connections reset");
        Ok(cut)
    }

    async fn clear(&self, id: &str) -> Result<bool, FaultError> {
        let Some(removed) = self.shared.remove(id) else { return Ok(false) };
        if let Some(timer) = &removed.timer {
            timer.abort();
        }
        // Expired but not yet collected by its timer: it was already gone as far as anyone saw.
        let was_live = removed.live(Instant::now());
        if was_live {
            info!(fault = %id, "network fault cleared");
        }
        Ok(was_live)
    }

    async fn clear_all(&self) -> Result<usize, FaultError> {
        let now = Instant::now();
        let removed = {
            let mut state = self.shared.lock();
            let removed = std::mem::take(&mut state.faults);
            self.shared.publish(&state);
            removed
        };
        removed.iter().filter_map(|f| f.timer.as_ref()).for_each(AbortHandle::abort);
        let cleared = removed.iter().filter(|f| f.live(now)).count();
        info!(proxy = %self.addr, cleared, "all network faults cleared");
        Ok(cleared)
    }

    fn faults(&self) -> Vec<NetworkFault> {
        let now = Instant::now();
        self.shared.lock().faults.iter().filter(|f| f.live(now)).map(|f| f.fault.clone()).collect()
    }

    fn proxy(&self) -> Option<super::ProxyStatus> {
        Some(super::ProxyStatus {
            listen: self.addr().to_string(),
            upstream: self.upstream(),
            connections: self.connection_count(),
            blackholed: self.blackholed_count(),
            latency_ms: self.latency_ms(),
        })
    }
}

/// Waits until the effects satisfy `done`. A closed channel means the proxy is gone: done too.
async fn until(effects: &mut watch::Receiver<Effects>, done: impl FnMut(&Effects) -> bool) -> Effects {
    match effects.wait_for(done).await {
        Ok(now) => *now,
        Err(_) => Effects { shutdown: true, ..Effects::default() },
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut effects = shared.effects.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = until(&mut effects, |e| e.shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                tokio::spawn(serve(Arc::clone(&shared), client, peer));
            }
            Err(error) => {
                // Typically EMFILE: back off rather than spin while the descriptor table is full.
                warn!(%error, "local proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Keeps the connection counters true however a task ends, including an abort at runtime exit.
struct Registration<'a> {
    shared: &'a Shared,
    forwarded: bool,
}

impl<'a> Registration<'a> {
    /// Registers a forwarded connection and returns the reset count it must outlive; `None`
    /// when a block began while it was connecting upstream, making it as new as any other.
    fn forwarded(shared: &'a Shared) -> Option<(Self, u64)> {
        let mut state = shared.lock();
        let effects = *shared.effects.borrow();
        if effects.blocked || effects.shutdown {
            return None;
        }
        state.forwarded += 1;
        Some((Self { shared, forwarded: true }, effects.cuts))
    }

    fn blackholed(shared: &'a Shared) -> Self {
        shared.lock().blackholed += 1;
        Self { shared, forwarded: false }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if self.forwarded {
            state.forwarded -= 1;
        } else {
            state.blackholed -= 1;
        }
    }
}

async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    // Redis traffic is small request/reply pairs: Nagle would add a delay nobody asked for.
    let _ = client.set_nodelay(true);
    if shared.effects.borrow().blocked {
        return blackhole(&shared, client, peer).await;
    }
    let connect = TcpStream::connect((shared.upstream_host.as_str(), shared.upstream_port));
    let upstream = match tokio::time::timeout(shared.connect_timeout, connect).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            debug!(%peer, %error, "upstream unreachable; closing the client connection");
            return;
        }
        Err(_) => {
            debug!(%peer, timeout = ?shared.connect_timeout, "upstream connect timed out; closing the client connection");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    match Registration::forwarded(&shared) {
        Some((_registration, cuts_seen)) => forward(&shared, client, upstream, cuts_seen, peer).await,
        None => blackhole(&shared, client, peer).await,
    }
}

/// Holds a connection accepted during a block: no upstream, no byte back, input discarded.
async fn blackhole(shared: &Shared, mut client: TcpStream, peer: SocketAddr) {
    let _registration = Registration::blackholed(shared);
    let mut effects = shared.effects.subscribe();
    debug!(%peer, "black-holing a new connection");
    let discard = async {
        let mut sink = vec![0; CHUNK];
        while let Ok(1..) = client.read(&mut sink).await {}
    };
    tokio::select! {
        // Closing lets the client reconnect, now through an open proxy.
        _ = until(&mut effects, |e| !e.blocked || e.shutdown) => debug!(%peer, "block over; closing a black-holed connection"),
        _ = discard => debug!(%peer, "client gave up on a black-holed connection"),
    }
}

/// Pumps both directions until both are done, an error occurs, or the connection is cut.
async fn forward(shared: &Shared, mut client: TcpStream, mut upstream: TcpStream, cuts_seen: u64, peer: SocketAddr) {
    debug!(%peer, "forwarding a connection to the upstream");
    let mut effects = shared.effects.subscribe();
    let replies_effects = effects.clone();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let pumps = async {
        tokio::try_join!(
            pump(client_read, upstream_write, None),
            pump(upstream_read, client_write, Some(replies_effects))
        )
    };
    let ended = tokio::select! {
        result = pumps => result.err(),
        seen = until(&mut effects, |e| e.cuts > cuts_seen || e.shutdown) => {
            if seen.cuts > cuts_seen {
                // SO_LINGER 0 turns the close into a reset: the client sees its connection
                // die mid-flight, as after a middlebox drops the flow, not a polite goodbye.
                let _ = client.set_zero_linger();
                let _ = upstream.set_zero_linger();
                debug!(%peer, "connection cut with a reset");
            }
            return;
        }
    };
    match ended {
        None => debug!(%peer, "connection closed"),
        Some(error) => debug!(%peer, %error, "connection ended with an error"),
    }
}

/// Copies one direction. Always by hand rather than `copy_bidirectional`, because latency can
/// begin on a connection that is already established. `delay` is given for replies only:
/// latency slows the round trip without holding up what the client sends.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut delay: Option<watch::Receiver<Effects>>,
) -> std::io::Result<()> {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close, so the other direction can still deliver what is in flight.
            return to.shutdown().await;
        }
        if let Some(effects) = delay.as_mut() {
            hold(effects, Instant::now()).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Holds a chunk until the latency in force has passed since it arrived. The latency is read
/// again whenever it changes, so clearing a fault also frees the chunks already waiting.
async fn hold(effects: &mut watch::Receiver<Effects>, arrived: Instant) {
    loop {
        let latency = effects.borrow_and_update().latency;
        if latency.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(arrived + latency) => return,
            changed = effects.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::ErrorKind;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use super::*;

    /// No test may hang the suite, whatever the proxy does.
    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        timeout(Duration::from_secs(10), test).await.expect("test did not finish within 10 s")
    }

    /// A stand-in for Redis that echoes whatever it receives.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy_to(upstream: SocketAddr) -> Arc<LocalProxy> {
        LocalProxy::start("127.0.0.1".into(), upstream.port(), Duration::from_secs(1)).unwrap()
    }

    async fn connect(proxy: &LocalProxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).await.unwrap()
    }

    /// Sends PING and waits up to 1 s for it to come back.
    async fn echoes(stream: &mut TcpStream) -> bool {
        stream.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0; 6];
        matches!(timeout(Duration::from_secs(1), stream.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"PING\r\n"
    }

    /// What a client sees when its connection was closed under it: EOF or an error, promptly.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0; 16];
        matches!(timeout(Duration::from_secs(1), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    /// What a client sees when its connection was cut: a reset, promptly.
    async fn was_reset(stream: &mut TcpStream) -> bool {
        let mut buf = [0; 16];
        let read = timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        matches!(read, Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset)
    }

    fn block(cut_existing: bool, duration: Option<Duration>) -> BlockSpec {
        BlockSpec { cut_existing, duration, ..BlockSpec::default() }
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let mut client = connect(&proxy).await;
            assert!(echoes(&mut client).await);
            assert_eq!(proxy.connection_count(), 1);
            assert_eq!(proxy.name(), "local");
        })
        .await;
    }

    #[tokio::test]
    async fn block_black_holes_new_connections_and_keeps_established_ones() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let mut established = connect(&proxy).await;
            assert!(echoes(&mut established).await);

            let fault = proxy.block(BlockSpec { run_id: Some("run-1".into()), ..block(false, None) }).await.unwrap();
            assert_eq!(fault.id, "local-block-1");
            assert_eq!(fault.kind, NetworkFaultKind::Block);
            assert_eq!(fault.target, format!("redis {} via proxy {}", proxy.upstream(), proxy.addr()));
            assert_eq!((fault.expires_at.as_deref(), fault.run_id.as_deref()), (None, Some("run-1")));
            assert_eq!(fault.cut_existing, Some(false));
            assert!(proxy.is_blocked());
            assert_eq!(proxy.faults(), vec![fault.clone()]);

            assert!(echoes(&mut established).await, "an established connection must survive a block");

            // Connects (the kernel accepts), but no reply, and no reset: the read times out.
            let mut new = connect(&proxy).await;
            new.write_all(b"PING\r\n").await.unwrap();
            let mut buf = [0; 16];
            assert!(timeout(Duration::from_millis(300), new.read(&mut buf)).await.is_err(), "must time out");
            assert_eq!(proxy.blackholed_count(), 1);

            assert!(proxy.clear(&fault.id).await.unwrap());
            assert!(!proxy.clear(&fault.id).await.unwrap(), "a second clear finds nothing");
            assert!(!proxy.is_blocked());
            assert!(closed(&mut new).await, "black-holed connections close when the block ends");
            let mut after = connect(&proxy).await;
            assert!(echoes(&mut after).await);
        })
        .await;
    }

    #[tokio::test]
    async fn block_with_cut_existing_resets_established_connections() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let mut established = connect(&proxy).await;
            assert!(echoes(&mut established).await);
            proxy.block(block(true, None)).await.unwrap();
            assert!(was_reset(&mut established).await);
        })
        .await;
    }

    #[tokio::test]
    async fn block_with_duration_clears_itself() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let fault = proxy.block(block(false, Some(Duration::from_millis(300)))).await.unwrap();
            assert!(fault.expires_at.is_some());
            assert_eq!(proxy.faults().len(), 1);
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(proxy.faults().is_empty());
            assert!(!proxy.is_blocked());
            assert!(!proxy.clear(&fault.id).await.unwrap(), "an expired fault is already gone");
            let mut client = connect(&proxy).await;
            assert!(echoes(&mut client).await);
        })
        .await;
    }

    #[tokio::test]
    async fn latency_delays_replies_until_cleared() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let mut client = connect(&proxy).await;
            assert!(echoes(&mut client).await);

            let spec = LatencySpec { latency: Duration::from_millis(200), ..LatencySpec::default() };
            let fault = proxy.latency(spec).await.unwrap();
            assert_eq!((fault.id.as_str(), fault.latency_ms), ("local-latency-1", Some(200)));
            assert_eq!(proxy.latency_ms(), 200);
            let started = std::time::Instant::now();
            assert!(echoes(&mut client).await);
            assert!(started.elapsed() >= Duration::from_millis(200), "took {:?}", started.elapsed());

            assert_eq!(proxy.clear_all().await.unwrap(), 1);
            assert_eq!(proxy.latency_ms(), 0);
            let started = std::time::Instant::now();
            assert!(echoes(&mut client).await);
            assert!(started.elapsed() < Duration::from_millis(200), "took {:?}", started.elapsed());
        })
        .await;
    }

    #[tokio::test]
    async fn reset_peers_cuts_established_connections_and_counts_them() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let (mut a, mut b) = (connect(&proxy).await, connect(&proxy).await);
            assert!(echoes(&mut a).await && echoes(&mut b).await);
            assert_eq!(proxy.reset_peers().await.unwrap(), 2);
            assert!(was_reset(&mut a).await && was_reset(&mut b).await);
            while proxy.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut c = connect(&proxy).await;
            assert!(echoes(&mut c).await, "new connections are not affected");
        })
        .await;
    }

    #[tokio::test]
    async fn out_of_range_requests_are_refused() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let port = proxy.shared.upstream_port;
            let other = port.wrapping_add(1);
            let error = proxy.block(BlockSpec { port: Some(other), ..BlockSpec::default() }).await.unwrap_err();
            let expected =
                format!("the local backend only proxies Redis on port {port}; port {other} cannot be blocked");
            assert_eq!(error, FaultError::Invalid(expected));
            assert!(proxy.block(BlockSpec { port: Some(port), ..BlockSpec::default() }).await.is_ok());

            for latency in [Duration::ZERO, Duration::from_secs(61)] {
                let error = proxy.latency(LatencySpec { latency, ..LatencySpec::default() }).await.unwrap_err();
                assert!(matches!(&error, FaultError::Invalid(m) if m.contains("at most 60 s")), "{error}");
            }
            assert_eq!(proxy.faults().len(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_upstream_closes_the_client() {
        bounded(async {
            let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
            let proxy = proxy_to(gone).await;
            let mut client = connect(&proxy).await;
            assert!(closed(&mut client).await);
            assert_eq!(proxy.connection_count(), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_everything() {
        bounded(async {
            let proxy = proxy_to(echo_server().await).await;
            let addr = proxy.addr();
            let mut client = connect(&proxy).await;
            assert!(echoes(&mut client).await);
            drop(proxy);
            assert!(closed(&mut client).await);
            // The listener goes with the accept loop, a moment after the drop.
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}
