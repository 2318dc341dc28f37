//! The store seam (issue 11, its first piece): the local-directory and Azure Blob implementations
//! of `ChaosStore` must behave alike, since replicas will agree with each other only through
//! conditional writes. Each behaviour is written once and run against both: `local::<name>` on a
//! fresh directory, `azure::<name>` on a fresh Azurite (in memory, free loopback port) with a
//! container of its own, reached through a SAS URL as `CHAOS_STORE_URL` would carry it. What only
//! Blob Storage can do (refuse a SAS, go away and come back) is tested after them.

use chaos_lab_testkit as common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_lab::chaos_store::{self, ChaosStore, Etag, StoreError, Write};
use common::azurite::Azurite;

/// Every shape of key the service uses.
const KEYS: [&str; 4] = ["runs/r1.json", "ledger/f1.json", "halt.json", "replicas/r1.json"];

/// Rounds of each race: one round could pass by luck of scheduling.
const ROUNDS: usize = 20;

/// The longest a store call may take when the store is gone (~5 s promised, plus slack). A
/// safety property, not a performance figure: the kill switch and fail-safe undos wait on it.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(6);

/// Runs each behaviour (an `async fn(Arc<dyn ChaosStore>)` below) against both implementations.
macro_rules! against_both {
    ($($behaviour:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let dir = super::common::temp_dir("store");
                    super::$behaviour(super::chaos_store::local(&dir).expect("local store")).await;
                }
            )*
        }
        mod azure {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                    let azurite = super::Azurite::start();
                    super::$behaviour(super::azure_store(&azurite).await).await;
                }
            )*
        }
    };
}

against_both!(
    put_then_get_round_trips,
    get_of_missing_key_is_none,
    if_absent_on_an_existing_key_conflicts,
    if_match_needs_the_current_etag,
    list_returns_the_prefix_sorted,
    delete_says_whether_something_was_there,
    racing_if_match_writers_one_wins,
    racing_if_absent_creators_one_wins,
    keys_that_are_not_plain_relative_paths_are_invalid,
);

/// A container name of its own (3–63 lowercase letters, digits, hyphens).
fn container_name() -> String {
    format!("chaos-{:016x}", fastrand::u64(..))
}

/// A store on a new container of `azurite`, opened as the service opens `CHAOS_STORE_URL`.
async fn azure_store(azurite: &Azurite) -> Arc<dyn ChaosStore> {
    let url = azurite.container_url(&container_name());
    chaos_store::azure_blob(&url, None).await.unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

async fn put_then_get_round_trips(store: Arc<dyn ChaosStore>) {
    for key in KEYS {
        let first = json(serde_json::json!({"key": key, "n": 1}));
        let etag = store.put(key, first.clone(), Write::Overwrite).await.unwrap();
        assert_eq!(
            store.get(key).await.unwrap(),
            Some((first, etag.clone())),
            "{key}: the bytes and the etag put returned"
        );
        // Same length on purpose: a new version must not depend on the size changing.
        let second = json(serde_json::json!({"key": key, "n": 2}));
        let etag2 = store.put(key, second.clone(), Write::Overwrite).await.unwrap();
        assert_ne!(etag2, etag, "{key}: an overwrite is a new version");
        assert_eq!(store.get(key).await.unwrap(), Some((second, etag2)), "{key} after the overwrite");
    }
}

async fn get_of_missing_key_is_none(store: Arc<dyn ChaosStore>) {
    for key in KEYS {
        assert_eq!(store.get(key).await.unwrap(), None, "{key} was never written");
    }
}

async fn if_absent_on_an_existing_key_conflicts(store: Arc<dyn ChaosStore>) {
    let key = "ledger/f1.json";
    let etag = store.put(key, b"first".to_vec(), Write::IfAbsent).await.expect("IfAbsent on a new key");
    let second = store.put(key, b"second".to_vec(), Write::IfAbsent).await;
    assert!(matches!(second, Err(StoreError::Conflict(_))), "IfAbsent on an existing key: {second:?}");
    assert_eq!(store.get(key).await.unwrap(), Some((b"first".to_vec(), etag)), "the refused write changed nothing");
}

async fn if_match_needs_the_current_etag(store: Arc<dyn ChaosStore>) {
    let key = "halt.json";
    let v1 = store.put(key, br#"{"halted":false}"#.to_vec(), Write::IfAbsent).await.unwrap();
    let v2 =
        store.put(key, br#"{"halted":true}"#.to_vec(), Write::IfMatch(v1.clone())).await.expect("IfMatch, current");
    assert_ne!(v2, v1, "a conditional write is a new version");
    let stale = store.put(key, br#"{"halted":false}"#.to_vec(), Write::IfMatch(v1)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "IfMatch with a stale etag: {stale:?}");
    assert_eq!(store.get(key).await.unwrap(), Some((br#"{"halted":true}"#.to_vec(), v2.clone())));
    // Deleted since it was read: IfMatch must not bring it back.
    assert!(store.delete(key).await.unwrap());
    let gone = store.put(key, br#"{"halted":false}"#.to_vec(), Write::IfMatch(v2)).await;
    assert!(matches!(gone, Err(StoreError::Conflict(_))), "IfMatch on a deleted key: {gone:?}");
    assert_eq!(store.get(key).await.unwrap(), None);
}

async fn list_returns_the_prefix_sorted(store: Arc<dyn ChaosStore>) {
    assert!(store.list("runs/").await.unwrap().is_empty(), "nothing written yet");
    let mut etags = BTreeMap::new();
    for key in ["runs/b.json", "ledger/f1.json", "runs/c.json", "halt.json", "runs/a.json", "replicas/r1.json"] {
        etags.insert(key.to_string(), store.put(key, key.as_bytes().to_vec(), Write::Overwrite).await.unwrap());
    }
    let runs = store.list("runs/").await.unwrap();
    let keys: Vec<&str> = runs.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["runs/a.json", "runs/b.json", "runs/c.json"]);
    for l in &runs {
        // Blob Storage lists ETags without the quotes its headers carry: a listed etag must still
        // equal the one put and get return, so it can go into IfMatch and be compared.
        assert_eq!(l.etag, etags[&l.key], "the listed etag of {} is the one its put returned", l.key);
    }
    assert!(store.list("heartbeats/").await.unwrap().is_empty(), "a prefix nothing was written under");
    let all: Vec<String> = store.list("").await.unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(all, etags.keys().cloned().collect::<Vec<_>>(), "the empty prefix lists every key, sorted");
}

async fn delete_says_whether_something_was_there(store: Arc<dyn ChaosStore>) {
    let key = "replicas/r1.json";
    store.put(key, br#"{"name":"r1"}"#.to_vec(), Write::Overwrite).await.unwrap();
    assert!(store.delete(key).await.unwrap(), "delete of a stored key");
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(store.list("replicas/").await.unwrap().is_empty());
    assert!(!store.delete(key).await.unwrap(), "delete of a key already deleted");
    assert!(!store.delete("replicas/never.json").await.unwrap(), "delete of a key never written");
}

async fn racing_if_match_writers_one_wins(store: Arc<dyn ChaosStore>) {
    let key = "ledger/f1.json";
    store.put(key, b"round 0".to_vec(), Write::Overwrite).await.unwrap();
    for round in 1..=ROUNDS {
        let (_, etag) = store.get(key).await.unwrap().expect("written");
        let (winner, etag) = one_winner(round, race(&store, key, round, || Write::IfMatch(etag.clone())).await);
        assert_eq!(
            store.get(key).await.unwrap(),
            Some((body(winner, round), etag)),
            "round {round}: the winner's write"
        );
    }
}

async fn racing_if_absent_creators_one_wins(store: Arc<dyn ChaosStore>) {
    for round in 1..=ROUNDS {
        let key = format!("runs/race-{round}.json");
        let (winner, etag) = one_winner(round, race(&store, &key, round, || Write::IfAbsent).await);
        assert_eq!(
            store.get(&key).await.unwrap(),
            Some((body(winner, round), etag)),
            "round {round}: the winner's write"
        );
    }
}

async fn keys_that_are_not_plain_relative_paths_are_invalid(store: Arc<dyn ChaosStore>) {
    // `..` would leave the directory (or the container, once the URL is normalised); `//` would
    // alias `runs/a.json` on disk but not in Blob Storage.
    for key in ["", "/halt.json", "../halt.json", "runs/../../halt.json", "runs//a.json"] {
        let put = store.put(key, b"{}".to_vec(), Write::Overwrite).await;
        assert!(matches!(put, Err(StoreError::Invalid(_))), "put {key:?}: {put:?}");
        let get = store.get(key).await;
        assert!(matches!(get, Err(StoreError::Invalid(_))), "get {key:?}: {get:?}");
        let delete = store.delete(key).await;
        assert!(matches!(delete, Err(StoreError::Invalid(_))), "delete {key:?}: {delete:?}");
    }
    assert!(store.list("").await.unwrap().is_empty(), "nothing was written");
}

/// What writer `w` writes in `round`.
fn body(w: usize, round: usize) -> Vec<u8> {
    format!("writer {w}, round {round}").into_bytes()
}

/// Two writers of `key` in tasks of their own, released together; their results, writer 0's first.
async fn race(
    store: &Arc<dyn ChaosStore>,
    key: &str,
    round: usize,
    write: impl Fn() -> Write,
) -> (Result<Etag, StoreError>, Result<Etag, StoreError>) {
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let [a, b] = [0, 1].map(|w| {
        let (store, start, key, write) = (store.clone(), start.clone(), key.to_string(), write());
        tokio::spawn(async move {
            start.wait().await;
            store.put(&key, body(w, round), write).await
        })
    });
    (a.await.unwrap(), b.await.unwrap())
}

/// The winner of a race and the etag it got; panics unless exactly one won and the other got
/// `Conflict`.
fn one_winner(round: usize, results: (Result<Etag, StoreError>, Result<Etag, StoreError>)) -> (usize, Etag) {
    match results {
        (Ok(etag), Err(StoreError::Conflict(_))) => (0, etag),
        (Err(StoreError::Conflict(_)), Ok(etag)) => (1, etag),
        other => panic!("round {round}: want one winner and one Conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_describe_names_the_directory() {
    let dir = common::temp_dir("store");
    let store = chaos_store::local(&dir).unwrap();
    let shown = store.describe();
    assert!(shown.contains(&dir.display().to_string()), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_describe_names_the_container_without_the_sas() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let azurite = Azurite::start();
    let container = container_name();
    let store = chaos_store::azure_blob(&azurite.container_url(&container), None).await.unwrap();
    // It goes into status and logs: the SAS in the URL is a secret.
    let shown = store.describe();
    assert!(shown.contains(&azurite.container_base(&container)), "{shown}");
    assert!(!shown.contains("sig="), "describe shows the SAS: {shown}");
    assert!(!shown.contains('?'), "describe shows the URL's query: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_url_that_is_not_a_url_is_invalid() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let r = chaos_store::azure_blob("not a url", None).await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{:?}", r.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_bad_sas_is_forbidden_and_says_so() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let azurite = Azurite::start();
    let container = container_name();
    // The container exists, so the refusal is about the signature alone.
    chaos_store::azure_blob(&azurite.container_url(&container), None).await.expect("the good SAS");
    let err = match chaos_store::azure_blob(&azurite.bad_sas_url(&container), None).await {
        Err(e) => e,
        // Opening may not call the service; the first call must refuse then.
        Ok(store) => store.get("halt.json").await.expect_err("a bad SAS must not read"),
    };
    let StoreError::Forbidden(msg) = &err else { panic!("a bad SAS: want Forbidden, got {err:?}") };
    assert!(msg.contains("SAS"), "the message should point at the SAS in CHAOS_STORE_URL: {msg}");
    assert!(!msg.contains("sig="), "the message shows the SAS: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_gone_is_unavailable_within_the_bound_then_works_again() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut azurite = Azurite::start();
    let url = azurite.container_url(&container_name());
    let store = chaos_store::azure_blob(&url, None).await.unwrap();
    store.put("halt.json", br#"{"halted":false}"#.to_vec(), Write::Overwrite).await.unwrap();

    azurite.stop();
    unavailable("get", store.get("halt.json")).await;
    unavailable("put", store.put("halt.json", br#"{"halted":true}"#.to_vec(), Write::Overwrite)).await;
    unavailable("list", store.list("runs/")).await;
    unavailable("delete", store.delete("halt.json")).await;
    // A replica starting while the store is down must come up (and say so), not hang.
    unavailable("azure_blob", chaos_store::azure_blob(&url, None)).await;

    azurite.restart();
    // In memory, the emulator came back empty: opening again creates the container.
    let reopened = chaos_store::azure_blob(&url, None).await.expect("opening after the restart");
    assert_eq!(reopened.get("halt.json").await.unwrap(), None, "the restart lost the data (in-memory)");
    // The store opened before the outage works again, without being rebuilt.
    let etag =
        store.put("halt.json", br#"{"halted":true}"#.to_vec(), Write::IfAbsent).await.expect("put after the restart");
    assert_eq!(store.get("halt.json").await.unwrap(), Some((br#"{"halted":true}"#.to_vec(), etag)));
}

/// Asserts `call` fails with `Unavailable` within [`GIVE_UP_WITHIN`], without showing the SAS.
async fn unavailable<T>(what: &str, call: impl Future<Output = Result<T, StoreError>>) {
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), call).await;
    let took = started.elapsed();
    let r = r.unwrap_or_else(|_| panic!("{what} with the store gone: no answer after 30 s"));
    assert!(took < GIVE_UP_WITHIN, "{what} with the store gone took {took:?}; every call must give up within ~5 s");
    match r {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("sig="), "{what}: the message shows the SAS: {msg}"),
        Err(e) => panic!("{what} with the store gone: want Unavailable, got {e:?}"),
        Ok(_) => panic!("{what} with the store gone succeeded"),
    }
}
