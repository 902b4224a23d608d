//! Configuration: command-line flags, then environment variables, then an
//! optional TOML file, then the built-in defaults, in that order of priority.

use crate::client_addr::Cidr;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_core::{DEFAULT_TURN_TTL_S, Limits, TurnConfig};
use switchboard_protocol::{IceServer, RoomMode};

fn parse_room_mode(s: &str) -> Result<RoomMode, String> {
    match s {
        "mesh" => Ok(RoomMode::Mesh),
        "sfu" => Ok(RoomMode::Sfu),
        other => Err(format!("room mode must be mesh or sfu, not {other:?}")),
    }
}

/// Shortest accepted auth secret: HS256 wants at least 256 bits of key.
pub const MIN_SECRET_BYTES: usize = 32;

/// The `switchboard` command line.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "Switchboard WebRTC signaling server")]
pub struct Cli {
    /// What to do; `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (for `serve` and the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Loopback: a reverse proxy on the same host. Headers from anyone else
/// are ignored unless the operator names the proxy.
pub fn default_trusted_proxies() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1"].iter().filter_map(|c| c.parse().ok()).collect()
}

/// Shortest metrics token accepted.
pub const MIN_METRICS_TOKEN_BYTES: usize = 16;

/// Longest lifetime `switchboard token` mints, in seconds (366 days).
pub const MAX_TOKEN_TTL_S: u64 = 366 * 24 * 3600;

/// Subcommands.

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a join token signed with the auth secret.
    Token {
        /// The room the token admits to.
        #[arg(long)]
        room: String,
        /// The identity (`sub`).
        #[arg(long)]
        identity: String,
        /// Lifetime in seconds (1 to a year: a longer-lived join token is a
        /// password nobody rotates).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_S))]
        ttl: u64,
    },
    /// Ask a running node to drain (hand its rooms to other nodes of the
    /// cluster, then exit), as SIGTERM does: `POST /v1/drain`.
    Drain {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The metrics token, when the node is not on this host.
        #[arg(long, env = "SWITCHBOARD_METRICS_TOKEN")]
        token: Option<String>,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Flags of `serve`; every one also reads an environment variable and a TOML
/// key of the same name.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "SWITCHBOARD_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_BIND")]
    pub bind: Option<SocketAddr>,
    /// HS256 secret for join tokens (at least 32 bytes). Without it rooms are
    /// open, which is only allowed on loopback unless --insecure-open-rooms.
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true, global = true)]
    pub auth_secret: Option<String>,
    /// Allow open rooms (no auth secret) on a non-loopback address.
    #[arg(long, env = "SWITCHBOARD_INSECURE_OPEN_ROOMS", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_open_rooms: Option<bool>,
    /// Browser origins allowed to connect besides the server's own (repeat
    /// or comma-separate); `*` allows any page. By default only the server's
    /// own origin: the one of --public-url, and the bind address.
    #[arg(long = "allowed-origin", env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers name the client
    /// (addresses or CIDR ranges; repeat or comma-separate) [default:
    /// loopback, 127.0.0.0/8 and ::1]. `none` trusts nobody.
    #[arg(long = "trusted-proxy", env = "SWITCHBOARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// STUN/TURN URLs handed to clients in the welcome (repeatable).
    #[arg(long = "ice-url", env = "SWITCHBOARD_ICE_URLS", value_delimiter = ',')]
    #[serde(skip)]
    pub ice_urls: Option<Vec<String>>,
    /// ICE servers with credentials (TOML only).
    #[arg(skip)]
    pub ice_servers: Option<Vec<IceServer>>,
    /// URL clients should reconnect to after a going-away notice.
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Bearer token that lets a scraper read /metrics from anywhere (at
    /// least 16 bytes). Without one, /metrics answers only direct loopback
    /// requests (not ones that came through a proxy).
    #[arg(long, env = "SWITCHBOARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// coturn `static-auth-secret` for TURN credentials (at least 16 bytes).
    /// Give two (current first) while rotating: new credentials use the
    /// first, and coturn is given both.
    #[arg(long = "turn-secret", env = "SWITCHBOARD_TURN_SECRETS", value_delimiter = ',', hide_env_values = true)]
    pub turn_secrets: Option<Vec<String>>,
    /// TURN URLs handed out with credentials (repeatable), e.g.
    /// `turn:turn.example.org:3478?transport=udp`.
    #[arg(long = "turn-url", env = "SWITCHBOARD_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// TURN credential lifetime in seconds [default: 3600; at most 86400].
    #[arg(long, env = "SWITCHBOARD_TURN_TTL_S")]
    pub turn_ttl_s: Option<u64>,
    /// UDP port of the embedded STUN server, on the bind address; 0 picks a
    /// free port [default: 3478].
    #[arg(long, env = "SWITCHBOARD_STUN_PORT")]
    pub stun_port: Option<u16>,
    /// Host name or address clients reach the STUN server at [default: the
    /// bind address, unless it is a wildcard such as 0.0.0.0].
    #[arg(long, env = "SWITCHBOARD_STUN_HOST")]
    pub stun_host: Option<String>,
    /// Do not run the embedded STUN server.
    #[arg(long, env = "SWITCHBOARD_NO_STUN", num_args = 0..=1, default_missing_value = "true")]
    pub no_stun: Option<bool>,
    /// Mode of rooms created without a `mode` token claim: `mesh` (peers
    /// connect directly) or `sfu` (through the built-in SFU) [default: mesh].
    #[arg(long, env = "SWITCHBOARD_ROOM_MODE", value_parser = parse_room_mode)]
    pub room_mode: Option<RoomMode>,
    /// Do not start the built-in SFU: SFU rooms are served by external
    /// `switchboard-sfu` processes (with auth-secret tokens carrying
    /// `"role":"sfu"`) that something else starts.
    #[arg(long, env = "SWITCHBOARD_NO_BUILTIN_SFU", num_args = 0..=1, default_missing_value = "true")]
    pub no_builtin_sfu: Option<bool>,
    /// The built-in SFU gathers loopback candidates only (tests and demos on
    /// one machine; never in production).
    #[arg(long, env = "SWITCHBOARD_SFU_LOOPBACK_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub sfu_loopback_only: Option<bool>,
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, `tracing` syntax [default: info].
    #[arg(long, env = "SWITCHBOARD_LOG")]
    pub log: Option<String>,
    /// Runtime worker threads [default: the number of CPU cores].
    #[arg(long, env = "SWITCHBOARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Hub shards: tasks that each own a share of the rooms (a room lives
    /// in one, by a hash of its name) [default: the number of CPU cores].
    #[arg(long, env = "SWITCHBOARD_HUB_SHARDS")]
    pub hub_shards: Option<usize>,
    /// Redis to form a cluster with (`redis://host:port/` or
    /// `redis+unix:///path/redis.sock`). Without it the server is a single
    /// node and needs no Redis.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (`A-Z a-z 0-9 _ - .`, 1–64) [default:
    /// random at each start].
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Chat messages each room's Redis stream keeps, in a cluster (history
    /// pages older than `chat_history` are read from it) [default: 5000].
    #[arg(long, env = "SWITCHBOARD_CHAT_STREAM_HISTORY")]
    pub chat_stream_history: Option<usize>,
    /// Time allowed to close connections on shutdown, ms [default: 5000].
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// In a cluster, how long a draining node fails `/readyz` before it
    /// hands its rooms over, so the load balancer has stopped sending it
    /// clients, ms [default: 1500].
    #[arg(long, env = "SWITCHBOARD_DRAIN_DELAY_MS")]
    pub drain_delay_ms: Option<u64>,
    /// Limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Overrides of [`Limits`]; see its fields for what each bound does.
#[derive(Debug, Default, Clone, Copy, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitArgs {
    /// Largest message in bytes [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Longest chat text in characters [default: 4000].
    #[arg(long, env = "SWITCHBOARD_MAX_CHAT_CHARS")]
    pub max_chat_chars: Option<usize>,
    /// Sustained messages per second per connection [default: 50].
    #[arg(long, env = "SWITCHBOARD_MESSAGES_PER_SECOND")]
    pub messages_per_second: Option<u32>,
    /// Burst above the sustained rate [default: 100].
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST")]
    pub message_burst: Option<u32>,
    /// Dropped messages tolerated before a flood close [default: 100].
    #[arg(long, env = "SWITCHBOARD_FLOOD_STRIKES")]
    pub flood_strikes: Option<u32>,
    /// Participants per room [default: 32].
    #[arg(long, env = "SWITCHBOARD_MAX_PEERS_PER_ROOM")]
    pub max_peers_per_room: Option<usize>,
    /// Rooms [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Open WebSocket connections [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Messages queued per connection before it is a slow consumer [default: 1024].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Time allowed to join, ms [default: 10000].
    #[arg(long, env = "SWITCHBOARD_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// Ping interval announced to clients, ms [default: 15000].
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Silence that closes a connection, ms [default: 45000].
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,
    /// Chat messages kept per room [default: 500].
    #[arg(long, env = "SWITCHBOARD_CHAT_HISTORY")]
    pub chat_history: Option<usize>,
    /// Chat messages per history page and in the welcome [default: 50].
    #[arg(long, env = "SWITCHBOARD_CHAT_HISTORY_PAGE")]
    pub chat_history_page: Option<usize>,
    /// Typing indicator lifetime, ms [default: 5000].
    #[arg(long, env = "SWITCHBOARD_TYPING_TTL_MS")]
    pub typing_ttl_ms: Option<u64>,
    /// How long a dropped participant's seat is held for a resume, ms; 0
    /// turns resume off [default: 20000].
    #[arg(long, env = "SWITCHBOARD_RESUME_GRACE_MS")]
    pub resume_grace_ms: Option<u64>,
    /// New WebSocket connections admitted per second; 0: no limit [default: 500].
    #[arg(long, env = "SWITCHBOARD_ADMISSIONS_PER_SECOND")]
    pub admissions_per_second: Option<u32>,
    /// New connections admitted at once after a quiet period [default: 500].
    #[arg(long, env = "SWITCHBOARD_ADMISSION_BURST")]
    pub admission_burst: Option<u32>,
    /// Unacknowledged events kept per participant for a resume [default: 1024].
    #[arg(long, env = "SWITCHBOARD_REPLAY_BUFFER")]
    pub replay_buffer: Option<usize>,
    /// New WebSocket connections admitted per second from one source; 0: no
    /// limit [default: 50].
    #[arg(long, env = "SWITCHBOARD_ADMISSIONS_PER_SOURCE_PER_SECOND")]
    pub admissions_per_source_per_second: Option<u32>,
    /// New connections one source may open at once [default: 100].
    #[arg(long, env = "SWITCHBOARD_ADMISSION_PER_SOURCE_BURST")]
    pub admission_per_source_burst: Option<u32>,
    /// Connections still in HTTP (not upgraded) [default: 1024].
    #[arg(long, env = "SWITCHBOARD_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// Connections in HTTP from one source (trusted proxies exempt) [default: 64].
    #[arg(long, env = "SWITCHBOARD_HTTP_CONNECTIONS_PER_SOURCE")]
    pub http_connections_per_source: Option<usize>,
    /// Time for a request's header to arrive, ms [default: 10000].
    #[arg(long, env = "SWITCHBOARD_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Bytes of unacknowledged events kept per participant [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_REPLAY_BUFFER_BYTES")]
    pub replay_buffer_bytes: Option<usize>,
    /// Bytes queued per connection before it is a slow consumer [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Bytes of chat kept per room [default: 524288].
    #[arg(long, env = "SWITCHBOARD_CHAT_HISTORY_BYTES")]
    pub chat_history_bytes: Option<usize>,
    /// Relays one sender may leave waiting for one reconnecting participant [default: 64].
    #[arg(long, env = "SWITCHBOARD_HELD_RELAYS_PER_SENDER")]
    pub held_relays_per_sender: Option<usize>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// Join token secret.
    pub auth_secret: Option<String>,
    /// Open rooms allowed off loopback.
    pub insecure_open_rooms: bool,
    /// Allowed browser origins (empty: any).
    pub allowed_origins: Vec<String>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// ICE servers for the welcome.
    pub ice_servers: Vec<IceServer>,
    /// Reconnect URL for the going-away notice.
    pub public_url: Option<String>,
    /// Bearer token for /metrics from anywhere.
    pub metrics_token: Option<String>,
    /// TURN credentials (none: no TURN server is handed out).
    pub turn: Option<TurnConfig>,
    /// The embedded STUN server (none: off).
    pub stun: Option<StunSettings>,
    /// Mode of rooms created without a `mode` claim.
    pub room_mode: RoomMode,
    /// The built-in SFU gathers loopback candidates only.
    pub sfu_loopback_only: bool,
    /// Start the built-in SFU for SFU rooms.
    pub builtin_sfu: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Runtime worker threads (None: one per core).
    pub worker_threads: Option<usize>,
    /// Hub shards (None: one per core).
    pub hub_shards: Option<usize>,
    /// The cluster this node is part of (None: a single node).
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// Bound on the shutdown.
    pub shutdown_grace: Duration,
    /// How long a draining node fails readiness before handing rooms over.
    pub drain_delay: Duration,
    /// Limits.
    pub limits: Limits,
}

/// Where the embedded STUN server listens and how clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunSettings {
    /// UDP port on the bind address (0: any free port).
    pub port: u16,
    /// Host advertised in `stun:` URLs (none: the bind address).
    pub host: Option<String>,
}

/// The STUN port registered for the protocol (RFC 8489).
pub const DEFAULT_STUN_PORT: u16 = 3478;

impl Default for StunSettings {
    fn default() -> Self {
        Self { port: DEFAULT_STUN_PORT, host: None }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth_secret: None,
            insecure_open_rooms: false,
            allowed_origins: Vec::new(),
            trusted_proxies: default_trusted_proxies(),
            ice_servers: Vec::new(),
            public_url: None,
            metrics_token: None,
            turn: None,
            stun: Some(StunSettings::default()),
            room_mode: RoomMode::Mesh,
            sfu_loopback_only: false,
            builtin_sfu: true,
            log_format: LogFormat::Human,
            log: "info".into(),
            worker_threads: None,
            hub_shards: None,
            cluster: None,
            shutdown_grace: Duration::from_secs(5),
            drain_delay: Duration::from_millis(1500),
            limits: Limits::default(),
        }
    }
}

impl ServeArgs {
    /// Reads the TOML file named by `--config`, if any.
    pub fn load_file(&self) -> anyhow::Result<Self> {
        let Some(path) = &self.config else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Merges flags/environment (`self`) over `file` over the defaults, and
    /// checks that the result is safe to run.
    pub fn resolve(self, file: Self) -> anyhow::Result<Settings> {
        let d = Settings::default();
        let mut ice_servers = self.ice_servers.or(file.ice_servers).unwrap_or_default();
        if let Some(urls) = self.ice_urls.filter(|u| !u.is_empty()) {
            ice_servers.push(IceServer { urls, username: None, credential: None });
        }
        let turn = match (self.turn_secrets.or(file.turn_secrets), self.turn_urls.or(file.turn_urls)) {
            (None, None) => None,
            (Some(secrets), Some(urls)) => {
                let ttl_s = self.turn_ttl_s.or(file.turn_ttl_s).unwrap_or(DEFAULT_TURN_TTL_S);
                Some(TurnConfig::new(secrets, urls, ttl_s).map_err(anyhow::Error::msg)?)
            }
            _ => bail!("TURN needs both a secret (--turn-secret) and at least one URL (--turn-url)"),
        };
        let stun = if self.no_stun.or(file.no_stun).unwrap_or(false) {
            None
        } else {
            Some(StunSettings {
                port: self.stun_port.or(file.stun_port).unwrap_or(DEFAULT_STUN_PORT),
                host: self.stun_host.or(file.stun_host),
            })
        };
        let settings = Settings {
            bind: self.bind.or(file.bind).unwrap_or(d.bind),
            // Kept even when empty: an empty secret is refused by `check`,
            // never taken to mean open rooms.
            auth_secret: self.auth_secret.or(file.auth_secret),
            insecure_open_rooms: self.insecure_open_rooms.or(file.insecure_open_rooms).unwrap_or(false),
            allowed_origins: self.allowed_origins.or(file.allowed_origins).unwrap_or_default(),
            trusted_proxies: match self.trusted_proxies.or(file.trusted_proxies) {
                None => d.trusted_proxies.clone(),
                Some(list) if list.iter().any(|p| p.trim() == "none") => Vec::new(),
                Some(list) => {
                    list.iter().map(|p| p.parse::<Cidr>()).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?
                }
            },
            ice_servers,
            public_url: self.public_url.or(file.public_url),
            metrics_token: self.metrics_token.or(file.metrics_token),
            turn,
            stun,
            room_mode: self.room_mode.or(file.room_mode).unwrap_or(RoomMode::Mesh),
            sfu_loopback_only: self.sfu_loopback_only.or(file.sfu_loopback_only).unwrap_or(false),
            builtin_sfu: !self.no_builtin_sfu.or(file.no_builtin_sfu).unwrap_or(false),
            log_format: self.log_format.or(file.log_format).unwrap_or(d.log_format),
            log: self.log.or(file.log).unwrap_or(d.log),
            worker_threads: self.worker_threads.or(file.worker_threads).filter(|n| *n > 0),
            hub_shards: self.hub_shards.or(file.hub_shards),
            cluster: self.redis_url.or(file.redis_url).map(|redis_url| crate::cluster::ClusterSettings {
                redis_url,
                node_id: self.node_id.or(file.node_id).unwrap_or_else(crate::cluster::random_node_id),
                chat_stream_history: self
                    .chat_stream_history
                    .or(file.chat_stream_history)
                    .unwrap_or(crate::cluster::DEFAULT_CHAT_STREAM_HISTORY),
            }),
            shutdown_grace: self
                .shutdown_grace_ms
                .or(file.shutdown_grace_ms)
                .map_or(d.shutdown_grace, Duration::from_millis),
            drain_delay: self.drain_delay_ms.or(file.drain_delay_ms).map_or(d.drain_delay, Duration::from_millis),
            limits: self.limits.over(file.limits).apply(&d.limits),
        };
        settings.check()?;
        Ok(settings)
    }
}

impl LimitArgs {
    fn over(self, file: Self) -> Self {
        Self {
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_chat_chars: self.max_chat_chars.or(file.max_chat_chars),
            messages_per_second: self.messages_per_second.or(file.messages_per_second),
            message_burst: self.message_burst.or(file.message_burst),
            flood_strikes: self.flood_strikes.or(file.flood_strikes),
            max_peers_per_room: self.max_peers_per_room.or(file.max_peers_per_room),
            max_rooms: self.max_rooms.or(file.max_rooms),
            max_connections: self.max_connections.or(file.max_connections),
            outbound_queue: self.outbound_queue.or(file.outbound_queue),
            join_timeout_ms: self.join_timeout_ms.or(file.join_timeout_ms),
            ping_interval_ms: self.ping_interval_ms.or(file.ping_interval_ms),
            ping_timeout_ms: self.ping_timeout_ms.or(file.ping_timeout_ms),
            chat_history: self.chat_history.or(file.chat_history),
            chat_history_page: self.chat_history_page.or(file.chat_history_page),
            typing_ttl_ms: self.typing_ttl_ms.or(file.typing_ttl_ms),
            resume_grace_ms: self.resume_grace_ms.or(file.resume_grace_ms),
            admissions_per_second: self.admissions_per_second.or(file.admissions_per_second),
            admission_burst: self.admission_burst.or(file.admission_burst),
            replay_buffer: self.replay_buffer.or(file.replay_buffer),
            replay_buffer_bytes: self.replay_buffer_bytes.or(file.replay_buffer_bytes),
            admissions_per_source_per_second: self
                .admissions_per_source_per_second
                .or(file.admissions_per_source_per_second),
            admission_per_source_burst: self.admission_per_source_burst.or(file.admission_per_source_burst),
            max_http_connections: self.max_http_connections.or(file.max_http_connections),
            http_connections_per_source: self.http_connections_per_source.or(file.http_connections_per_source),
            header_read_timeout_ms: self.header_read_timeout_ms.or(file.header_read_timeout_ms),
            outbound_queue_bytes: self.outbound_queue_bytes.or(file.outbound_queue_bytes),
            chat_history_bytes: self.chat_history_bytes.or(file.chat_history_bytes),
            held_relays_per_sender: self.held_relays_per_sender.or(file.held_relays_per_sender),
        }
    }

    fn apply(self, d: &Limits) -> Limits {
        let ms = Duration::from_millis;
        Limits {
            max_message_bytes: self.max_message_bytes.unwrap_or(d.max_message_bytes),
            max_chat_chars: self.max_chat_chars.unwrap_or(d.max_chat_chars),
            messages_per_second: self.messages_per_second.unwrap_or(d.messages_per_second),
            message_burst: self.message_burst.unwrap_or(d.message_burst),
            flood_strikes: self.flood_strikes.unwrap_or(d.flood_strikes),
            max_peers_per_room: self.max_peers_per_room.unwrap_or(d.max_peers_per_room),
            max_rooms: self.max_rooms.unwrap_or(d.max_rooms),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            outbound_queue: self.outbound_queue.unwrap_or(d.outbound_queue),
            join_timeout: self.join_timeout_ms.map_or(d.join_timeout, ms),
            ping_interval: self.ping_interval_ms.map_or(d.ping_interval, ms),
            ping_timeout: self.ping_timeout_ms.map_or(d.ping_timeout, ms),
            chat_history: self.chat_history.unwrap_or(d.chat_history),
            chat_history_page: self.chat_history_page.unwrap_or(d.chat_history_page),
            typing_ttl: self.typing_ttl_ms.map_or(d.typing_ttl, ms),
            resume_grace: self.resume_grace_ms.map_or(d.resume_grace, ms),
            admissions_per_second: self.admissions_per_second.unwrap_or(d.admissions_per_second),
            admission_burst: self.admission_burst.unwrap_or(d.admission_burst),
            replay_buffer: self.replay_buffer.unwrap_or(d.replay_buffer),
            replay_buffer_bytes: self.replay_buffer_bytes.unwrap_or(d.replay_buffer_bytes),
            admissions_per_source_per_second: self
                .admissions_per_source_per_second
                .unwrap_or(d.admissions_per_source_per_second),
            admission_per_source_burst: self.admission_per_source_burst.unwrap_or(d.admission_per_source_burst),
            max_http_connections: self.max_http_connections.unwrap_or(d.max_http_connections),
            http_connections_per_source: self.http_connections_per_source.unwrap_or(d.http_connections_per_source),
            header_read_timeout: self.header_read_timeout_ms.map_or(d.header_read_timeout, ms),
            outbound_queue_bytes: self.outbound_queue_bytes.unwrap_or(d.outbound_queue_bytes),
            chat_history_bytes: self.chat_history_bytes.unwrap_or(d.chat_history_bytes),
            held_relays_per_sender: self.held_relays_per_sender.unwrap_or(d.held_relays_per_sender),
            sfu_launch_timeout: d.sfu_launch_timeout,
        }
    }
}

impl Settings {
    /// Refuses configurations that are unsafe or cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.auth_secret {
            if secret.trim().is_empty() {
                bail!(
                    "the auth secret is empty or blank: set a real one (at least {MIN_SECRET_BYTES} bytes), \
                     or unset it for open rooms on loopback"
                );
            }
            if secret.len() < MIN_SECRET_BYTES {
                bail!("the auth secret must be at least {MIN_SECRET_BYTES} bytes");
            }
        }
        if self.auth_secret.is_none() && !self.insecure_open_rooms {
            if !self.bind.ip().is_loopback() {
                bail!(
                    "refusing to serve open rooms on {}: set an auth secret (--auth-secret / SWITCHBOARD_AUTH_SECRET) \
                     or accept the risk with --insecure-open-rooms",
                    self.bind.ip()
                );
            }
            if self.public_url.is_some() {
                bail!(
                    "refusing to serve open rooms: --public-url says clients reach this server from elsewhere \
                     (through a proxy). Set an auth secret, or accept the risk with --insecure-open-rooms"
                );
            }
        }
        if self.metrics_token.as_ref().is_some_and(|t| t.trim().len() < MIN_METRICS_TOKEN_BYTES) {
            bail!("the metrics token must be at least {MIN_METRICS_TOKEN_BYTES} bytes");
        }
        for origin in &self.allowed_origins {
            if origin != "*" && crate::origins::normalize(origin).split_once("://").is_none() {
                bail!("allowed origin {origin:?} must be scheme://host[:port], or * for any");
            }
        }
        if let Some(n) = self.hub_shards
            && !(1..=crate::shards::MAX_HUB_SHARDS).contains(&n)
        {
            bail!("hub_shards must be 1 to {}", crate::shards::MAX_HUB_SHARDS);
        }
        if let Some(cluster) = &self.cluster {
            if !crate::cluster::keys::valid_node_id(&cluster.node_id) {
                bail!("node_id must be 1-64 characters of A-Z a-z 0-9 _ - .");
            }
            if cluster.chat_stream_history == 0 {
                bail!("chat_stream_history must be positive");
            }
            if redis::Client::open(cluster.redis_url.as_str()).is_err() {
                bail!("redis_url is not a Redis URL (redis://host:port/ or redis+unix:///path/redis.sock)");
            }
        }
        let l = &self.limits;
        if l.max_message_bytes < 1024 {
            bail!("max_message_bytes must be at least 1024");
        }
        if l.outbound_queue == 0 || l.max_connections == 0 || l.max_peers_per_room == 0 || l.max_rooms == 0 {
            bail!("outbound_queue, max_connections, max_peers_per_room and max_rooms must be positive");
        }
        if l.max_http_connections == 0 || l.http_connections_per_source == 0 || l.header_read_timeout.is_zero() {
            bail!("max_http_connections, http_connections_per_source and header_read_timeout must be positive");
        }
        if l.outbound_queue_bytes < l.max_message_bytes || l.chat_history_bytes == 0 {
            bail!("outbound_queue_bytes must be at least max_message_bytes, and chat_history_bytes positive");
        }
        if l.replay_buffer > 0 && (l.replay_buffer_bytes < l.max_message_bytes || l.held_relays_per_sender == 0) {
            bail!("replay_buffer_bytes must be at least max_message_bytes, and held_relays_per_sender positive");
        }
        if l.ping_timeout <= l.ping_interval {
            bail!("ping_timeout must be longer than ping_interval");
        }
        Ok(())
    }

    /// The hub shards to run: as configured, or one per core.
    pub fn hub_shards(&self) -> usize {
        self.hub_shards.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["switchboard"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").serve
    }

    #[test]
    fn cluster_and_shard_settings_are_checked_at_start() {
        let resolve = |args: &[&str]| parse(args).resolve(ServeArgs::default());
        let ok = resolve(&["--redis-url", "redis://127.0.0.1:6379/", "--node-id", "n-1", "--hub-shards", "4"])
            .expect("valid");
        let cluster = ok.cluster.expect("a cluster");
        assert_eq!((cluster.node_id.as_str(), cluster.chat_stream_history, ok.hub_shards), ("n-1", 5000, Some(4)));
        for bad in [
            &["--hub-shards", "0"][..],
            &["--hub-shards", "257"],
            &["--redis-url", "redis://127.0.0.1/", "--node-id", "a:b"],
            &["--redis-url", "redis://127.0.0.1/", "--node-id", ""],
            &["--redis-url", "redis://127.0.0.1/", "--chat-stream-history", "0"],
            &["--redis-url", "not a url"],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(resolve(&[]).expect("valid").cluster.is_none(), "a single node by default");
    }

    #[test]
    fn defaults_are_loopback_and_open() {
        let s = ServeArgs::default().resolve(ServeArgs::default()).expect("valid");
        assert!(s.bind.ip().is_loopback());
        assert!(s.auth_secret.is_none());
    }

    #[test]
    fn empty_or_blank_secrets_and_open_rooms_behind_a_public_url_are_refused() {
        for secret in ["", " ", &" ".repeat(32), "\t\n"] {
            let err = parse(&["--auth-secret", secret]).resolve(ServeArgs::default()).unwrap_err();
            assert!(err.to_string().contains("empty or blank"), "{secret:?}: {err}");
        }
        let err = parse(&["--public-url", "wss://sig.example/v1/ws"]).resolve(ServeArgs::default()).unwrap_err();
        assert!(err.to_string().contains("--public-url"), "{err}");
        let declared = parse(&["--public-url", "wss://sig.example/v1/ws", "--insecure-open-rooms"]);
        assert!(declared.resolve(ServeArgs::default()).is_ok());
        assert!(parse(&["--allowed-origin", "app.example"]).resolve(ServeArgs::default()).is_err(), "no scheme");
        assert!(parse(&["--allowed-origin", "*"]).resolve(ServeArgs::default()).is_ok());
    }

    #[test]
    fn public_bind_without_secret_is_refused_unless_insecure() {
        let err = parse(&["--bind", "0.0.0.0:8080"]).resolve(ServeArgs::default()).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(parse(&["--bind", "0.0.0.0:8080", "--insecure-open-rooms"]).resolve(ServeArgs::default()).is_ok());
        let secret = "x".repeat(32);
        assert!(parse(&["--bind", "0.0.0.0:8080", "--auth-secret", &secret]).resolve(ServeArgs::default()).is_ok());
    }

    #[test]
    fn turn_needs_secret_and_url_and_a_capped_lifetime() {
        let secret = "t".repeat(16);
        let url = "turn:127.0.0.1:3479?transport=udp";
        let s = parse(&["--turn-secret", &secret, "--turn-url", url]).resolve(ServeArgs::default()).expect("valid");
        assert_eq!(s.turn.expect("turn").ttl_s, DEFAULT_TURN_TTL_S);
        let rotating = format!("{secret},{}", "u".repeat(16));
        assert!(parse(&["--turn-secret", &rotating, "--turn-url", url]).resolve(ServeArgs::default()).is_ok());
        assert!(parse(&["--turn-secret", &secret]).resolve(ServeArgs::default()).is_err(), "no URL");
        assert!(parse(&["--turn-url", url]).resolve(ServeArgs::default()).is_err(), "no secret");
        let too_long = parse(&["--turn-secret", &secret, "--turn-url", url, "--turn-ttl-s", "86401"]);
        assert!(too_long.resolve(ServeArgs::default()).unwrap_err().to_string().contains("86400"));
    }

    #[test]
    fn stun_is_on_by_default_and_can_be_moved_or_turned_off() {
        let s = ServeArgs::default().resolve(ServeArgs::default()).expect("valid");
        assert_eq!(s.stun, Some(StunSettings { port: DEFAULT_STUN_PORT, host: None }));
        let s = parse(&["--stun-port", "0", "--stun-host", "stun.example"]).resolve(ServeArgs::default()).unwrap();
        assert_eq!(s.stun, Some(StunSettings { port: 0, host: Some("stun.example".into()) }));
        assert_eq!(parse(&["--no-stun"]).resolve(ServeArgs::default()).unwrap().stun, None);
    }

    #[test]
    fn the_readme_example_file_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("a TOML example in the README") + "```toml\n".len();
        let example = &readme[start..start + readme[start..].find("```").expect("closed")];
        let file: ServeArgs = toml::from_str(example).expect("the README's TOML parses");
        let secrets = format!("{},{}", "a".repeat(32), "b".repeat(32));
        let s = parse(&["--auth-secret", &"c".repeat(32), "--turn-secret", &secrets]).resolve(file).expect("valid");
        assert_eq!(s.turn.expect("turn").urls.len(), 2);
        assert_eq!(s.stun.expect("stun").host.as_deref(), Some("signal.example.org"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(parse(&["--auth-secret", "short"]).resolve(ServeArgs::default()).is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: ServeArgs = toml::from_str(
            r#"
            bind = "127.0.0.1:9000"
            allowed_origins = ["https://a.example"]
            [limits]
            max_rooms = 7
            messages_per_second = 5
            [[ice_servers]]
            urls = ["turn:turn.example:3478"]
            username = "u"
            credential = "c"
            "#,
        )
        .expect("toml");
        let s =
            parse(&["--messages-per-second", "9", "--ice-url", "stun:127.0.0.1:3478"]).resolve(file).expect("valid");
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.limits.max_rooms, 7);
        assert_eq!(s.limits.messages_per_second, 9);
        assert_eq!(s.allowed_origins, vec!["https://a.example"]);
        assert_eq!(s.ice_servers.len(), 2);
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        assert!(toml::from_str::<ServeArgs>("bnd = \"x\"").is_err());
    }
}
