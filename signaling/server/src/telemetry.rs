//! Logs and metrics. Metric handles are resolved once at start so that the
//! hot path increments an atomic and never looks a name up.

use crate::config::{LogFormat, Settings};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use switchboard_protocol::{ClientKind, ErrorCode, LeaveReason, ServerKind};

/// Relay latency buckets, seconds: from 25 us to 1 s.
const LATENCY_BUCKETS: [f64; 14] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The WebRTC stack's crates (the built-in SFU runs in the process). Their
/// warnings name candidates and addresses, which our logs never carry, so
/// they are silenced unless the operator's filter names them.
pub const WEBRTC_LOG_TARGETS: [&str; 15] = [
    "webrtc",
    "webrtc_data",
    "webrtc_ice",
    "webrtc_mdns",
    "webrtc_media",
    "webrtc_sctp",
    "webrtc_srtp",
    "webrtc_util",
    "dtls",
    "interceptor",
    "rtcp",
    "rtp",
    "sdp",
    "stun",
    "turn",
];

/// The filter actually installed: the operator's, plus `=off` for every
/// WebRTC crate it does not mention.
pub fn log_filter(configured: &str) -> String {
    let mentioned =
        |target: &str| configured.split(',').any(|d| d.split(['=', '[']).next().is_some_and(|t| t.trim() == target));
    let mut filter = configured.to_owned();
    for target in WEBRTC_LOG_TARGETS.iter().filter(|t| !mentioned(t)) {
        filter.push_str(&format!(",{target}=off"));
    }
    filter
}

/// Installs the global log subscriber (once per process; later calls do
/// nothing).
pub fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&settings.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Everything `/metrics` shows: the server's series, then the built-in
/// SFU's live tracks (which come and go with the tracks).
pub fn render() -> String {
    let mut text = prometheus().render();
    text.push_str(&switchboard_sfu::metrics::render());
    text
}

/// The process-wide Prometheus recorder: `metrics` has one global recorder,
/// so servers started in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("switchboard_relay_latency_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("switchboard_redis_round_trip_seconds".into()), &LATENCY_BUCKETS)
            })
            .unwrap_or_else(|e| unreachable!("static buckets are valid: {e}"));
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then our
        // handle renders nothing, which the metrics test would catch.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The caps a TCP connection can be refused at before HTTP (a fixed label
/// set: the metric's cardinality cannot grow).
pub const HTTP_CAPS: [&str; 2] = ["http_connections", "http_connections_per_source"];

/// What a Redis round trip was for (a fixed set: the metric's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOp {
    /// The registry heartbeat (a pipeline, and the node list).
    Heartbeat,
    /// A pipeline of bridge frames.
    Publish,
    /// A pipeline of chat writes.
    ChatStore,
}

impl RedisOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Publish => "publish",
            Self::ChatStore => "chat_store",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Heartbeat => 0,
            Self::Publish => 1,
            Self::ChatStore => 2,
        }
    }
}

/// Every [`RedisOp`], in index order.
pub const REDIS_OPS: [RedisOp; 3] = [RedisOp::Heartbeat, RedisOp::Publish, RedisOp::ChatStore];

/// Every metric the server records.
#[derive(Debug)]
pub struct Telemetry {
    messages_in: Vec<Counter>,
    messages_out: Vec<Counter>,
    errors: Vec<Counter>,
    disconnects: Vec<Counter>,
    /// Time from reading a relayed message to writing it to the addressee.
    pub relay_latency: Histogram,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Rooms with members.
    pub rooms: Gauge,
    /// Participants in rooms.
    pub peers: Gauge,
    /// Participants whose connection dropped and whose seat is held for a
    /// resume (counted in `peers` too).
    pub peers_reconnecting: Gauge,
    /// Sessions resumed after a dropped connection.
    pub resumes: Counter,
    /// 1 while the last heartbeat reached Redis, 0 when it did not (stays 0
    /// on a single node).
    pub redis_up: Gauge,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Live nodes in the cluster, this one included, as of the last
    /// heartbeat that reached Redis.
    pub cluster_nodes: Gauge,
    /// Redis round trips that succeeded, by what they were for
    /// ([`REDIS_OPS`]).
    redis_round_trips: [Histogram; 3],
    /// Bridge frames published to other nodes.
    pub bridge_frames_out: Counter,
    /// Bridge frames received from other nodes.
    pub bridge_frames_in: Counter,
    /// Room leases taken (placed or adopted) by this node.
    pub leases_taken: Counter,
    /// Rooms this node had to give up because another node held them.
    pub rooms_evicted: Counter,
    /// Rooms a draining node handed to another node, and rooms it could
    /// not hand over (their members were told `going_away` as at a plain
    /// shutdown, and join afresh).
    pub handovers: [Counter; 2],
    /// Rooms this node took over from a draining node.
    pub rooms_imported: Counter,
    /// 1 while this node drains.
    pub draining: Gauge,
    /// Upgrades refused at the connection limit or the admission rate.
    pub rejected_connections: Counter,
    /// STUN Binding requests answered.
    pub stun_answered: Counter,
    /// Datagrams on the STUN port that were not Binding requests.
    pub stun_ignored: Counter,
    /// TURN credentials issued over HTTP (the welcome and `ice_servers`
    /// replies are counted as messages out).
    pub turn_http_issued: Counter,
    /// TURN credential requests over HTTP refused (bad or missing token).
    pub turn_http_refused: Counter,
    /// TCP connections closed before HTTP because a connection cap was
    /// reached: the global one, or one source's.
    http_refused: [Counter; 2],
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Self {
        prometheus();
        Self {
            messages_in: ClientKind::ALL
                .iter()
                .map(|k| metrics::counter!("switchboard_messages_in_total", "type" => k.as_str()))
                .collect(),
            messages_out: ServerKind::ALL
                .iter()
                .map(|k| metrics::counter!("switchboard_messages_out_total", "type" => k.as_str()))
                .collect(),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| metrics::counter!("switchboard_errors_total", "code" => c.as_str()))
                .collect(),
            disconnects: LeaveReason::ALL
                .iter()
                .map(|r| metrics::counter!("switchboard_disconnects_total", "reason" => r.as_str()))
                .collect(),
            relay_latency: metrics::histogram!("switchboard_relay_latency_seconds"),
            connections: metrics::gauge!("switchboard_connections"),
            rooms: metrics::gauge!("switchboard_rooms"),
            peers: metrics::gauge!("switchboard_peers"),
            peers_reconnecting: metrics::gauge!("switchboard_peers_reconnecting"),
            resumes: metrics::counter!("switchboard_resumes_total"),
            redis_up: metrics::gauge!("switchboard_redis_up"),
            redis_errors: metrics::counter!("switchboard_redis_errors_total"),
            cluster_nodes: metrics::gauge!("switchboard_cluster_nodes"),
            redis_round_trips: REDIS_OPS
                .map(|op| metrics::histogram!("switchboard_redis_round_trip_seconds", "op" => op.as_str())),
            bridge_frames_out: metrics::counter!("switchboard_bridge_frames_total", "direction" => "out"),
            bridge_frames_in: metrics::counter!("switchboard_bridge_frames_total", "direction" => "in"),
            leases_taken: metrics::counter!("switchboard_room_leases_taken_total"),
            rooms_evicted: metrics::counter!("switchboard_rooms_evicted_total"),
            handovers: ["handed_over", "not_handed_over"]
                .map(|result| metrics::counter!("switchboard_room_handovers_total", "result" => result)),
            rooms_imported: metrics::counter!("switchboard_rooms_imported_total"),
            draining: metrics::gauge!("switchboard_draining"),
            rejected_connections: metrics::counter!("switchboard_rejected_connections_total"),
            stun_answered: metrics::counter!("switchboard_stun_requests_total", "result" => "answered"),
            stun_ignored: metrics::counter!("switchboard_stun_requests_total", "result" => "ignored"),
            turn_http_issued: metrics::counter!("switchboard_turn_credentials_http_total", "result" => "issued"),
            turn_http_refused: metrics::counter!("switchboard_turn_credentials_http_total", "result" => "refused"),
            http_refused: HTTP_CAPS.map(|cap| metrics::counter!("switchboard_http_refused_total", "cap" => cap)),
        }
    }

    /// Records a Redis round trip that succeeded.
    pub fn redis_round_trip(&self, op: RedisOp, took: std::time::Duration) {
        self.redis_round_trips[op.index()].record(took.as_secs_f64());
    }

    /// Counts a message received.
    pub fn message_in(&self, kind: ClientKind) {
        self.messages_in[kind.index()].increment(1);
    }

    /// Counts messages sent.
    pub fn message_out(&self, kind: ServerKind, n: u64) {
        self.messages_out[kind.index()].increment(n);
    }

    /// Counts an error sent.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].increment(1);
        }
    }

    /// Counts a TCP connection closed at a connection cap (one of
    /// [`HTTP_CAPS`]).
    pub fn refused_http(&self, cap: &str) {
        if let Some(i) = HTTP_CAPS.iter().position(|c| *c == cap) {
            self.http_refused[i].increment(1);
        }
    }

    /// Counts a closed connection (joined or not) by the reason it ended.
    pub fn disconnect(&self, reason: LeaveReason) {
        if let Some(i) = LeaveReason::ALL.iter().position(|r| *r == reason) {
            self.disconnects[i].increment(1);
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webrtc_crates_are_silent_unless_named() {
        let f = log_filter("info");
        assert!(f.contains(",webrtc_ice=off") && f.contains(",turn=off"), "{f}");
        let f = log_filter("info,webrtc_ice=debug");
        assert!(f.contains("webrtc_ice=debug") && !f.contains("webrtc_ice=off") && f.contains(",webrtc=off"), "{f}");
        assert!(tracing_subscriber::EnvFilter::try_new(log_filter("warn,switchboard_server=debug")).is_ok());
    }

    /// The README's metrics table is the operator's reference: every series
    /// the server registers must be in it.
    #[test]
    fn every_series_is_documented_in_the_readme() {
        let telemetry = Telemetry::new();
        telemetry.relay_latency.record(0.001);
        let readme = include_str!("../../../README.md");
        let rendered = prometheus().render();
        let families: Vec<&str> =
            rendered.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        assert!(families.len() > 10, "{rendered}");
        for family in families {
            assert!(readme.contains(&format!("`{family}")), "README's metrics table lacks {family}");
        }
    }
}
