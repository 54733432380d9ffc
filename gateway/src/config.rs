//! The server's configuration: a TOML file, or the embedded defaults.
//!
//! ```toml
//! [server]
//! data_dir = "data"            # journal, secrets, FIX stores (relative to the working directory)
//! http = "127.0.0.1:8080"
//! fix = "127.0.0.1:9878"
//! fix_enabled = true           # the FIX acceptor (one per process)
//! durability = "batch"         # none | batch | every
//! risk = true                  # pre-trade risk checks (accounts, locks)
//!
//! [[instrument]]
//! symbol = "CCC-2026-C"
//! segment = "compliance"       # compliance | offset (informational)
//! mode = "auction"             # auction (call phases, uncross) | continuous
//! tick_size = 1
//! lot_size = 1
//! price_floor = 100            # optional
//! price_ceiling = 10000        # optional (the forbearance price; market buys lock at it)
//! max_order_qty = 1000000
//! allocation = "pro-rata"      # pro-rata | time-priority
//! price_rule = "midpoint"      # midpoint | lowest | highest
//! [instrument.calendar]        # optional: the session scheduler moves the phases
//! day = "last-wednesday"       # last-<weekday> | <n>-<weekday> (n = 1..5) | every-<weekday>
//! open = "13:00"               # local time (utc_offset)
//! close = "15:00"
//! holdings_check_minutes = 30  # close -> uncross
//! publish_minutes = 30         # uncross -> closed
//! utc_offset = "+05:30"
//!
//! [[participant]]
//! id = 1
//! name = "Aluminium Co"
//! comp_id = "ALUCO"            # FIX SenderCompID of its sessions
//! registry_account = "IN-CCC-0001"
//! initial_funds = 50000000     # deposited once, when the journal is created
//! initial_holdings = { "CCC-2026-C" = 0 }
//!
//! [[operator]]
//! name = "ops"
//!
//! [settlement]                 # optional: these are the defaults
//! enabled = true               # trades become obligations settled at the registry
//! registry = "embedded"        # embedded (<data_dir>/registry.sqlite) | http (needs registry_url)
//! # registry_url = "http://127.0.0.1:7070"  # a registry service (`cccx registry serve`)
//! fee_bps = 0                  # exchange fee charged to each side, basis points of the value
//! max_attempts = 5             # attempts without an answer before an obligation is broken
//! retry_ms = 1000              # first pause before retrying failed obligations (doubles, max 60 s)
//! ```
//!
//! Settlement keeps its obligations in `<data_dir>/settlement.sqlite` and its hash-chained audit
//! trail in `<data_dir>/audit.jsonl`. The embedded registry is seeded on first start: an account
//! per participant's `registry_account`, and its `initial_holdings` issued to it.
//!
//! No passwords or keys live in the file: each participant's API key and FIX password and each
//! operator's API key are generated on first start and kept in `<data_dir>/secrets.json`
//! ([`crate::secrets`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cccx_engine::calendar::{SessionDay, SessionSchedule};
use cccx_engine::journal::Durability;
use cccx_engine::recovery::EngineConfig;
use cccx_engine::{
    AuctionAllocation, AuctionPriceRule, InstrumentId, InstrumentSpec, ParticipantId, Phase, RiskConfig,
    ORDER_QTY_MAX,
};
use serde::{Deserialize, Serialize};
use time::{Duration, Time, UtcOffset, Weekday};

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The values do not make a working exchange.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the server runs.
    #[serde(default)]
    pub server: ServerSection,
    /// The instruments, in id order.
    #[serde(rename = "instrument")]
    pub instruments: Vec<InstrumentConfig>,
    /// The participants.
    #[serde(rename = "participant", default)]
    pub participants: Vec<ParticipantConfig>,
    /// The operators.
    #[serde(rename = "operator", default)]
    pub operators: Vec<OperatorConfig>,
    /// Settlement and the registry.
    #[serde(default)]
    pub settlement: SettlementSection,
}

/// Name of the embedded registry's database inside the data directory.
pub const REGISTRY_FILE: &str = "registry.sqlite";
/// Name of the settlement database inside the data directory.
pub const SETTLEMENT_FILE: &str = "settlement.sqlite";
/// Name of the settlement audit trail inside the data directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The most attempts an obligation may be given.
pub const SETTLEMENT_ATTEMPTS_MAX: u32 = 100;
/// The longest first retry pause, in milliseconds (retries back off up to a minute).
pub const RETRY_MS_MAX: u64 = 60_000;

/// Which registry settlement talks to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    /// The embedded registry on SQLite in the data directory.
    Embedded,
    /// A registry service over HTTP (`registry_url`).
    Http,
}

/// `[settlement]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementSection {
    /// Whether trades are settled (and the holdings check runs) at all.
    pub enabled: bool,
    /// `embedded` or `http`; left out, `http` when `registry_url` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryKind>,
    /// The registry service's base URL (`http://host:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_url: Option<String>,
    /// The fee charged to each side, in basis points of a trade's value (0 to 10000).
    pub fee_bps: u32,
    /// Attempts without an answer before an obligation is broken.
    pub max_attempts: u32,
    /// The first pause before failed obligations are retried, in milliseconds; it doubles
    /// after each run that still fails, up to a minute.
    pub retry_ms: u64,
}

impl Default for SettlementSection {
    fn default() -> Self {
        SettlementSection {
            enabled: true,
            registry: None,
            registry_url: None,
            fee_bps: 0,
            max_attempts: 5,
            retry_ms: 1000,
        }
    }
}

impl SettlementSection {
    /// The registry to use: the embedded one, or the service at a URL.
    pub fn registry(&self) -> Result<RegistryChoice, ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("[settlement] {m}")));
        match (self.registry, &self.registry_url) {
            (Some(RegistryKind::Embedded), Some(_)) => {
                bad("registry_url is for registry = \"http\"; leave it out for the embedded registry")
            }
            (None | Some(RegistryKind::Embedded), None) => Ok(RegistryChoice::Embedded),
            (Some(RegistryKind::Http), None) => bad("registry = \"http\" needs registry_url"),
            (_, Some(url)) => {
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                match rest {
                    Some(host) if !host.is_empty() && !host.starts_with('/') => {
                        Ok(RegistryChoice::Http(url.clone()))
                    }
                    _ => bad(&format!("registry_url `{url}` is not like http://host:port")),
                }
            }
        }
    }
}

/// The registry settlement uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryChoice {
    /// `<data_dir>/registry.sqlite`.
    Embedded,
    /// A registry service at this base URL.
    Http(String),
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The data directory: journal, secrets, FIX stores.
    pub data_dir: PathBuf,
    /// The HTTP (REST and WebSocket) listen address.
    pub http: SocketAddr,
    /// The FIX acceptor's listen address (port 0: any free port).
    pub fix: SocketAddr,
    /// Whether to run the FIX acceptor (QuickFIX allows one per process: an embedding that
    /// runs several servers in one process turns it off for all but one).
    pub fix_enabled: bool,
    /// `none`, `batch` or `every`.
    pub durability: DurabilityName,
    /// Pre-trade risk checks.
    pub risk: bool,
    /// Commands the engine's input queue holds before callers are refused (503).
    pub queue_capacity: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            data_dir: PathBuf::from("data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            fix: SocketAddr::from(([127, 0, 0, 1], 9878)),
            fix_enabled: true,
            durability: DurabilityName::Batch,
            risk: true,
            queue_capacity: 65_536,
        }
    }
}

/// A durability policy by name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityName {
    /// Page cache only.
    None,
    /// Group commit.
    Batch,
    /// A sync per command.
    Every,
}

impl DurabilityName {
    /// The journal's policy.
    pub fn durability(self) -> Durability {
        match self {
            DurabilityName::None => Durability::None,
            DurabilityName::Batch => Durability::Batch { records: 256, interval_us: 1000 },
            DurabilityName::Every => Durability::Every,
        }
    }
}

/// How an instrument trades.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Closed double-sided call auction: closed, bid window, window closed, uncross.
    Auction,
    /// Continuous price-time trading.
    Continuous,
}

/// `[[instrument]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// The symbol (FIX tag 55, the REST path).
    pub symbol: String,
    /// The market segment (`compliance` or `offset`); informational.
    #[serde(default = "default_segment")]
    pub segment: String,
    /// Auction or continuous.
    pub mode: Mode,
    /// Price step.
    #[serde(default = "one_i64")]
    pub tick_size: i64,
    /// Quantity step.
    #[serde(default = "one_u64")]
    pub lot_size: u64,
    /// Lowest price allowed.
    #[serde(default)]
    pub price_floor: Option<i64>,
    /// Highest price allowed (the forbearance price).
    #[serde(default)]
    pub price_ceiling: Option<i64>,
    /// Largest order.
    #[serde(default = "default_max_qty")]
    pub max_order_qty: u64,
    /// `pro-rata` or `time-priority` at the marginal level of an uncross.
    #[serde(default)]
    pub allocation: AllocationName,
    /// `midpoint`, `lowest` or `highest` of the candidate price interval.
    #[serde(default)]
    pub price_rule: PriceRuleName,
    /// The session calendar, if the scheduler should move the phases.
    #[serde(default)]
    pub calendar: Option<CalendarConfig>,
    /// The vintage of the certificates the embedded registry issues for `initial_holdings`;
    /// left out, the first year (a four-digit number) in the symbol, else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vintage: Option<u16>,
}

impl InstrumentConfig {
    /// The vintage of the instrument's certificates (see [`InstrumentConfig::vintage`]).
    pub fn vintage(&self) -> u16 {
        self.vintage.unwrap_or_else(|| {
            self.symbol
                .split(|c: char| !c.is_ascii_digit())
                .find(|part| part.len() == 4)
                .and_then(|y| y.parse().ok())
                .unwrap_or(0)
        })
    }
}

/// An allocation rule by name.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationName {
    /// Pro rata at the margin.
    #[default]
    ProRata,
    /// Time priority at the margin.
    TimePriority,
}

/// A price rule by name.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceRuleName {
    /// The middle of the interval.
    #[default]
    Midpoint,
    /// Its lowest price.
    Lowest,
    /// Its highest price.
    Highest,
}

/// `[instrument.calendar]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// `last-wednesday`, `2-tuesday`, `every-friday`, ...
    pub day: String,
    /// The bid window opens (local time, `HH:MM`).
    pub open: String,
    /// The bid window closes.
    pub close: String,
    /// Minutes from the close to the uncross: the time the registry's holdings check has to
    /// remove short sellers' offers (0 leaves it none).
    #[serde(default = "thirty")]
    pub holdings_check_minutes: i64,
    /// Minutes from the uncross to the close of the session.
    #[serde(default = "thirty")]
    pub publish_minutes: i64,
    /// The local offset from UTC, `+05:30` for IST.
    #[serde(default = "ist")]
    pub utc_offset: String,
}

/// `[[participant]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantConfig {
    /// The participant's number in the engine.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The SenderCompID of its FIX sessions.
    pub comp_id: String,
    /// Its account at the registry.
    #[serde(default)]
    pub registry_account: String,
    /// Funds deposited when the journal is created.
    #[serde(default)]
    pub initial_funds: i64,
    /// Certificates per instrument symbol credited when the journal is created.
    #[serde(default)]
    pub initial_holdings: BTreeMap<String, i64>,
}

/// `[[operator]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The operator's name.
    pub name: String,
}

fn default_segment() -> String {
    "compliance".into()
}
fn one_i64() -> i64 {
    1
}
fn one_u64() -> u64 {
    1
}
fn default_max_qty() -> u64 {
    1_000_000
}
fn thirty() -> i64 {
    30
}
fn ist() -> String {
    "+05:30".into()
}

/// The embedded defaults: two CCC instruments (the compliance segment as a monthly call
/// auction on the last Wednesday, 13:00-15:00 IST; the offset segment continuous), four
/// participants with deposits and holdings, one operator.
pub const DEFAULT_CONFIG: &str = r#"
[server]
data_dir = "data"
http = "127.0.0.1:8080"
fix = "127.0.0.1:9878"
durability = "batch"
risk = true

[[instrument]]
symbol = "CCC-2026-C"
segment = "compliance"
mode = "auction"
price_floor = 100
price_ceiling = 10000
max_order_qty = 1000000
[instrument.calendar]
day = "last-wednesday"
open = "13:00"
close = "15:00"
holdings_check_minutes = 30
publish_minutes = 30
utc_offset = "+05:30"

[[instrument]]
symbol = "CCC-2026-O"
segment = "offset"
mode = "continuous"
price_floor = 100
price_ceiling = 10000
max_order_qty = 1000000

[[participant]]
id = 1
name = "Aluminium Co (obligated)"
comp_id = "ALUCO"
registry_account = "IN-CCC-0001"
initial_funds = 100000000

[[participant]]
id = 2
name = "Cement Co (obligated)"
comp_id = "CEMCO"
registry_account = "IN-CCC-0002"
initial_funds = 100000000

[[participant]]
id = 3
name = "Steel Co (surplus)"
comp_id = "STEELCO"
registry_account = "IN-CCC-0003"
initial_funds = 10000000
initial_holdings = { "CCC-2026-C" = 50000, "CCC-2026-O" = 20000 }

[[participant]]
id = 4
name = "Green Offsets Ltd"
comp_id = "GREENOFF"
registry_account = "IN-CCC-0004"
initial_funds = 10000000
initial_holdings = { "CCC-2026-O" = 30000 }

[[operator]]
name = "ops"

[settlement]
enabled = true
registry = "embedded"   # or "http", with registry_url = "http://host:port" (cccx registry serve)
fee_bps = 0
max_attempts = 5
retry_ms = 1000
"#;

impl Config {
    /// The embedded defaults.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, Path::new("<embedded defaults>"))
            .expect("the embedded defaults are valid")
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.instruments.is_empty() {
            return bad("at least one [[instrument]] is needed".into());
        }
        self.engine_config()?;
        for i in &self.instruments {
            if let Some(c) = &i.calendar {
                c.schedule(InstrumentId(0))
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", i.symbol)))?;
            }
        }
        for (n, p) in self.participants.iter().enumerate() {
            let earlier = &self.participants[..n];
            if earlier.iter().any(|q| q.id == p.id) {
                return bad(format!("participant id {} is configured twice", p.id));
            }
            if p.comp_id.is_empty() || !p.comp_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return bad(format!("participant {}: comp_id must be letters, digits or _", p.id));
            }
            if earlier.iter().any(|q| q.comp_id == p.comp_id) {
                return bad(format!("comp_id {} is configured twice", p.comp_id));
            }
            if p.initial_funds < 0 {
                return bad(format!("participant {}: initial_funds must not be negative", p.id));
            }
            for (symbol, qty) in &p.initial_holdings {
                if self.instrument_id(symbol).is_none() {
                    return bad(format!(
                        "participant {}: initial_holdings names unknown instrument {symbol}",
                        p.id
                    ));
                }
                if *qty < 0 {
                    return bad(format!("participant {}: initial_holdings must not be negative", p.id));
                }
            }
        }
        for (n, o) in self.operators.iter().enumerate() {
            if self.operators[..n].iter().any(|q| q.name == o.name) {
                return bad(format!("operator {} is configured twice", o.name));
            }
        }
        if !(1..=QUEUE_CAPACITY_MAX).contains(&self.server.queue_capacity) {
            return bad(format!("queue_capacity must be 1 to {QUEUE_CAPACITY_MAX}"));
        }
        self.validate_settlement()
    }

    fn validate_settlement(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[settlement] {m}")));
        let s = &self.settlement;
        s.registry()?;
        if s.fee_bps > 10_000 {
            return bad(format!("fee_bps {} is more than the whole value (10000)", s.fee_bps));
        }
        if !(1..=SETTLEMENT_ATTEMPTS_MAX).contains(&s.max_attempts) {
            return bad(format!("max_attempts must be 1 to {SETTLEMENT_ATTEMPTS_MAX}"));
        }
        if !(1..=RETRY_MS_MAX).contains(&s.retry_ms) {
            return bad(format!("retry_ms must be 1 to {RETRY_MS_MAX}"));
        }
        if !s.enabled {
            return Ok(());
        }
        for (n, p) in self.participants.iter().enumerate() {
            let a = &p.registry_account;
            if a.is_empty() {
                return bad(format!(
                    "participant {} has no registry_account (settlement needs one; or set enabled = false)",
                    p.id
                ));
            }
            if a.len() > 64 || !a.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!(
                    "participant {}: registry_account must be 1 to 64 printable characters without spaces",
                    p.id
                ));
            }
            if self.participants[..n].iter().any(|q| &q.registry_account == a) {
                return bad(format!("registry_account {a} is configured twice"));
            }
        }
        for i in &self.instruments {
            // Trade ids are `<symbol>-<seq>-<n>`: at most 62 characters for settlement.
            if i.symbol.len() > 20 || !i.symbol.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!(
                    "{}: a settled instrument's symbol has at most 20 printable characters without spaces",
                    i.symbol
                ));
            }
        }
        Ok(())
    }

    /// The engine's configuration: instruments (auction instruments start closed) and risk.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let instruments = self
            .instruments
            .iter()
            .map(|i| InstrumentSpec {
                tick_size: i.tick_size,
                lot_size: i.lot_size,
                price_floor: i.price_floor,
                price_ceiling: i.price_ceiling,
                max_order_qty: i.max_order_qty.min(ORDER_QTY_MAX),
                initial_phase: match i.mode {
                    Mode::Auction => Phase::Closed,
                    Mode::Continuous => Phase::Continuous,
                },
                auction_allocation: match i.allocation {
                    AllocationName::ProRata => AuctionAllocation::ProRata,
                    AllocationName::TimePriority => AuctionAllocation::TimePriority,
                },
                auction_price_rule: match i.price_rule {
                    PriceRuleName::Midpoint => AuctionPriceRule::Midpoint,
                    PriceRuleName::Lowest => AuctionPriceRule::Lowest,
                    PriceRuleName::Highest => AuctionPriceRule::Highest,
                },
                ..InstrumentSpec::canonical(&i.symbol)
            })
            .collect::<Vec<_>>();
        for spec in &instruments {
            spec.validate().map_err(|e| ConfigError::Invalid(format!("{}: {e}", spec.symbol)))?;
        }
        for (n, spec) in instruments.iter().enumerate() {
            if instruments[..n].iter().any(|s| s.symbol == spec.symbol) {
                return Err(ConfigError::Invalid(format!("instrument {} is configured twice", spec.symbol)));
            }
        }
        let risk = if self.server.risk { RiskConfig::ON } else { RiskConfig::OFF };
        Ok(EngineConfig { instruments, risk })
    }

    /// The id of an instrument symbol.
    pub fn instrument_id(&self, symbol: &str) -> Option<InstrumentId> {
        self.instruments.iter().position(|i| i.symbol == symbol).map(|i| InstrumentId(i as u32))
    }

    /// The participant with a FIX CompID.
    pub fn participant_by_comp_id(&self, comp_id: &str) -> Option<&ParticipantConfig> {
        self.participants.iter().find(|p| p.comp_id == comp_id)
    }

    /// The participant with an id.
    pub fn participant(&self, id: ParticipantId) -> Option<&ParticipantConfig> {
        self.participants.iter().find(|p| p.id == id.0)
    }

    /// The session calendars, one per instrument that has one.
    pub fn schedules(&self) -> Vec<SessionSchedule> {
        self.instruments
            .iter()
            .enumerate()
            .filter_map(|(i, inst)| inst.calendar.as_ref()?.schedule(InstrumentId(i as u32)).ok())
            .collect()
    }
}

/// The largest engine input queue.
pub const QUEUE_CAPACITY_MAX: usize = 1 << 24;
/// The longest holdings check or publication interval of a calendar, in minutes (a week).
pub const CALENDAR_MINUTES_MAX: i64 = 7 * 24 * 60;

impl CalendarConfig {
    /// The engine's calendar for instrument `instrument`.
    pub fn schedule(&self, instrument: InstrumentId) -> Result<SessionSchedule, String> {
        for (name, minutes) in [
            ("holdings_check_minutes", self.holdings_check_minutes),
            ("publish_minutes", self.publish_minutes),
        ] {
            if !(0..=CALENDAR_MINUTES_MAX).contains(&minutes) {
                return Err(format!("{name} must be 0 to {CALENDAR_MINUTES_MAX}"));
            }
        }
        let hhmm = time::macros::format_description!("[hour]:[minute]");
        let at = |s: &str| Time::parse(s, &hhmm).map_err(|_| format!("`{s}` is not a time of day HH:MM"));
        let offset_format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
        let utc_offset = UtcOffset::parse(&self.utc_offset, &offset_format)
            .map_err(|_| format!("utc_offset `{}` is not like +05:30", self.utc_offset))?;
        let schedule = SessionSchedule {
            instrument,
            day: parse_day(&self.day)?,
            open: at(&self.open)?,
            close: at(&self.close)?,
            holdings_check: Duration::minutes(self.holdings_check_minutes),
            publish: Duration::minutes(self.publish_minutes),
            utc_offset,
        };
        schedule.validate().map_err(|e| e.to_string())?;
        Ok(schedule)
    }
}

fn parse_day(text: &str) -> Result<SessionDay, String> {
    let err = || format!("day `{text}`: expected last-<weekday>, <1-5>-<weekday> or every-<weekday>");
    let (which, day) = text.split_once('-').ok_or_else(err)?;
    let weekday = match day {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return Err(err()),
    };
    match which {
        "last" => Ok(SessionDay::LastWeekdayOfMonth(weekday)),
        "every" => Ok(SessionDay::Weekly(weekday)),
        n => match n.parse::<u8>() {
            Ok(n @ 1..=5) => Ok(SessionDay::NthWeekdayOfMonth(n, weekday)),
            _ => Err(err()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_are_a_working_exchange() {
        let c = Config::embedded();
        assert_eq!(c.instruments.len(), 2);
        assert_eq!(c.participants.len(), 4);
        assert_eq!(c.schedules().len(), 1);
        let engine = c.engine_config().unwrap();
        assert_eq!(engine.instruments[0].initial_phase, Phase::Closed);
        assert!(engine.risk.checks);
        assert_eq!(c.participant_by_comp_id("STEELCO").unwrap().id, 3);
        assert!(c.settlement.enabled);
        assert_eq!(c.settlement.registry().unwrap(), RegistryChoice::Embedded);
        assert_eq!(c.instruments[0].vintage(), 2026);
    }

    #[test]
    fn a_registry_url_selects_the_http_registry_and_settlement_can_be_off() {
        let text = "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[[participant]]\nid = 1\nname = \"x\"\ncomp_id = \"X\"\n[settlement]\nenabled = false\nregistry_url = \"http://127.0.0.1:7070\"\n";
        let c = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.settlement.registry().unwrap(), RegistryChoice::Http("http://127.0.0.1:7070".into()));
        assert!(!c.settlement.enabled);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"sideways\"\n", "sideways"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\ncolour = 1\n", "colour"),
            ("", "instrument"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\ntick_size = 0\n", "tick"),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[instrument.calendar]\nday = \"last-funday\"\nopen = \"13:00\"\nclose = \"15:00\"\n",
                "funday",
            ),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[[participant]]\nid = 1\nname = \"x\"\ncomp_id = \"X\"\n[[participant]]\nid = 1\nname = \"y\"\ncomp_id = \"Y\"\n",
                "twice",
            ),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[[participant]]\nid = 1\nname = \"x\"\ncomp_id = \"X\"\ninitial_holdings = { B = 1 }\n",
                "unknown instrument B",
            ),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[instrument.calendar]\nday = \"last-friday\"\nopen = \"13:00\"\nclose = \"15:00\"\nholdings_check_minutes = 9223372036854775807\n",
                "holdings_check_minutes",
            ),
            ("[server]\nqueue_capacity = 18446744073709551615\n[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n", "queue_capacity"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nfee_bps = 10001\n", "fee_bps"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nmax_attempts = 0\n", "max_attempts"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nregistry = \"http\"\n", "needs registry_url"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nregistry_url = \"ftp://x\"\n", "ftp://x"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nregistry = \"embedded\"\nregistry_url = \"http://x:1\"\n", "registry_url is for"),
            ("[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[settlement]\nregistry = \"ledger\"\n", "ledger"),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[[participant]]\nid = 1\nname = \"x\"\ncomp_id = \"X\"\n",
                "no registry_account",
            ),
            (
                "[[instrument]]\nsymbol = \"A\"\nmode = \"auction\"\n[[participant]]\nid = 1\nname = \"x\"\ncomp_id = \"X\"\nregistry_account = \"R\"\n[[participant]]\nid = 2\nname = \"y\"\ncomp_id = \"Y\"\nregistry_account = \"R\"\n",
                "registry_account R is configured twice",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text, Path::new("x.toml")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn calendar_days_parse() {
        assert_eq!(parse_day("last-wednesday"), Ok(SessionDay::LastWeekdayOfMonth(Weekday::Wednesday)));
        assert_eq!(parse_day("2-tuesday"), Ok(SessionDay::NthWeekdayOfMonth(2, Weekday::Tuesday)));
        assert_eq!(parse_day("every-friday"), Ok(SessionDay::Weekly(Weekday::Friday)));
        assert!(parse_day("6-friday").is_err());
        assert!(parse_day("friday").is_err());
    }
}
