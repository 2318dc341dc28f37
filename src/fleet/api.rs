//! The fleet's types as the HTTP API and scripts see them: its status, and what a fault for
//! other replicas is and which replicas it is for.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FAULTS;

/// The fleet as `GET /chaos/status` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetStatus {
    /// The chaos store (`CHAOS_STORE_URL` without its query); null for a replica alone.
    pub store: Option<String>,
    /// This replica's name.
    pub replica: String,
    /// Live replicas (a heartbeat within the last ~10 s), by name.
    pub replicas: Vec<ReplicaView>,
    /// The last store error, if the store is failing.
    pub error: Option<String>,
    /// Calls made to the store so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_calls: Option<u64>,
}

/// One live replica.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplicaView {
    pub name: String,
    /// The replica answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    pub last_seen: String,
    /// Faults its ledger held at its last heartbeat (unknown until one was read).
    pub faults: Option<u64>,
}

/// The JSON forms of a `replicas` field, for the API description ([`Selector::parse`] reads
/// them): `"self"` (or absent, or null), `"all"`, a count, a share or a list of names.
pub struct ReplicaSelector;

impl utoipa::PartialSchema for ReplicaSelector {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        OneOfBuilder::new()
            .item(
                string().enum_values(Some(["self", "all"])).description(Some("This replica alone, or every live one.")),
            )
            .item(string().pattern(Some("^(100|[1-9][0-9]?)%$")).description(Some("A share of the live replicas.")))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("A number of replicas.")),
            )
            .item(ArrayBuilder::new().items(string()).min_items(Some(1)).description(Some("Replica names.")))
            .item(ObjectBuilder::new().schema_type(Type::Null).description(Some("This replica alone.")))
            .description(Some(
                "Which replicas: \"self\" (the default), \"all\", a count such as 2, a share such as \"50%\", or a \
                 list of replica names; resolved against live heartbeats when applied.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ReplicaSelector {}

/// An in-process fault meant for other replicas: `fleet/faults/<id>.json`. Each target applies
/// its share through its own ledger (owner `fleet:<id>`, the same lease) and undoes it when the
/// blob is gone or the lease ends. The origin's ledger entry (`Undo::Fleet`) deletes the blob.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetFault {
    pub id: String,
    /// `load`, `hang` or `redis_reset`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default)]
    pub seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub replicas: Vec<String>,
    /// Who applied it (`run:<id>` or `endpoint`) and on which replica.
    pub owner: String,
    pub origin: String,
    pub lease_expires_at: chrono::DateTime<chrono::Utc>,
}

impl FleetFault {
    /// A new fault for `replicas`; owner, origin and lease are filled in where it is applied.
    pub fn new(kind: &str, level: Option<String>, seconds: i64, scope: Option<String>, replicas: Vec<String>) -> Self {
        Self {
            id: format!("ff-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            kind: kind.into(),
            level,
            seconds,
            scope,
            replicas,
            owner: String::new(),
            origin: String::new(),
            lease_expires_at: chrono::Utc::now(),
        }
    }

    pub fn key(&self) -> String {
        format!("{FAULTS}{}.json", self.id)
    }

    /// For people: `low load on r2, r3`.
    pub fn describe(&self) -> String {
        let what = match self.kind.as_str() {
            "load" => format!("{} load", self.level.as_deref().unwrap_or("?")),
            "hang" => format!("{} hang", self.scope.as_deref().unwrap_or("app")),
            other => other.replace('_', " "),
        };
        format!("{what} on {}", self.replicas.join(", "))
    }
}

/// Which replicas an in-process fault (load, hang, Redis reset) is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// This replica only (the default; what a lone replica always does).
    SelfOnly,
    /// Every live replica.
    All,
    /// This many live replicas, picked at random.
    Count(usize),
    /// This share of the live replicas (rounded up), picked at random.
    Percent(u32),
    /// These replicas, by name.
    Names(Vec<String>),
}

impl Selector {
    /// From the `replicas` field of a request body or script map: `"self"`, `"all"`, a count
    /// (`2`), a share (`"50%"`) or a list of names.
    pub fn parse(v: &Value) -> Result<Self, String> {
        const HOW: &str = "replicas must be \"self\", \"all\", a count such as 2, a share such as \"50%\", or a list of replica names";
        match v {
            Value::Null => Ok(Self::SelfOnly),
            Value::String(s) if s == "self" => Ok(Self::SelfOnly),
            Value::String(s) if s == "all" => Ok(Self::All),
            Value::String(s) if s.ends_with('%') => match s.trim_end_matches('%').trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Self::Percent(p)),
                _ => Err(format!("{HOW}; a share is 1% to 100%, got '{s}'")),
            },
            Value::Number(n) => match n.as_u64() {
                Some(c) if c >= 1 => Ok(Self::Count(c as usize)),
                _ => Err(format!("{HOW}; a count is 1 or more, got {n}")),
            },
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("{HOW}; got a list with {x}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Names),
            other => Err(format!("{HOW}; got {other}")),
        }
    }
}
