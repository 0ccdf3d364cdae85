//! The TOML file as written: serde types with `deny_unknown_fields`, so a
//! misspelt key is an error with its line and column. Values that can be
//! wrong on their own (durations, addresses) fail inside their own
//! `Deserialize`, which makes `toml` attach their position too.

use serde::Deserialize;
use toml::Spanned;

pub use super::values::{ClientIpMode, Dur, Flavor, OptDur};

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub game: Option<String>,
    pub flavor: Option<Flavor>,
    #[serde(default)]
    pub listen: RawListen,
    pub backends: Option<Spanned<Vec<RawBackend>>>,
    #[serde(default)]
    pub heartbeat: RawHeartbeat,
    #[serde(default)]
    pub failover: RawFailover,
    #[serde(default)]
    pub client_ip: RawClientIp,
    #[serde(default)]
    pub notices: RawNotices,
    #[serde(default)]
    pub outage: RawOutage,
    #[serde(default)]
    pub relogin: RawRelogin,
    #[serde(default)]
    pub resume: super::resume::RawResume,
    #[serde(default)]
    pub templates: RawTemplates,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub telnet: RawTelnet,
    #[serde(default)]
    pub bus: RawBus,
    pub irc: Option<RawIrc>,
    #[serde(default)]
    pub metrics: super::metrics::RawMetrics,
    pub tls: Option<Spanned<super::doors::RawTls>>,
    pub mssp: Option<std::collections::BTreeMap<String, Spanned<toml::Value>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_sessions: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub login_timeout: Option<Spanned<OptDur>>,
    pub max_detached: Option<usize>,
    pub lazy_connect: Option<bool>,
    pub tls_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub ws_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub wss_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub ws_trusted_proxies: Option<Vec<Spanned<String>>>,
    pub handshake_timeout: Option<Dur>,
    pub ws_ping_interval: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Spanned<String>,
    pub addr: Spanned<String>,
    pub connect_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub interval: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    pub fall: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    pub after: Option<OptDur>,
    pub failback: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub mode: Option<ClientIpMode>,
    pub command: Option<Spanned<String>>,
    pub reverse_dns: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNotices {
    pub offline: Option<Spanned<String>>,
    pub online: Option<Spanned<String>>,
    pub held_input: Option<Spanned<String>>,
    pub queued_input: Option<Spanned<String>>,
    pub relogin_failed: Option<Spanned<String>>,
    pub failover: Option<Spanned<String>>,
    pub max_hold: Option<Spanned<String>>,
    pub stopping: Option<Spanned<String>>,
    pub full: Option<Spanned<String>>,
    pub per_ip: Option<Spanned<String>>,
    pub login_timeout: Option<Spanned<String>>,
    pub line_too_long: Option<Spanned<String>>,
    pub flood: Option<Spanned<String>>,
    pub connecting: Option<Spanned<String>>,
    pub resumed: Option<Spanned<String>>,
    pub upgraded: Option<Spanned<String>>,
    pub busy: Option<Spanned<String>>,
    pub upgrade_reconnect: Option<Spanned<String>>,
    pub paused: Option<Spanned<String>>,
    pub resume_waiting: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutage {
    pub max_hold: Option<Spanned<OptDur>>,
    pub queue_input: Option<bool>,
    pub queue_max_lines: Option<usize>,
    pub queue_max_age: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRelogin {
    /// Re-logins started per second, across all sessions.
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<u32>,
    pub jitter: Option<Dur>,
    pub timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTemplates {
    pub probe: Option<Spanned<String>>,
    pub identity: Option<Spanned<String>>,
    pub login: Option<Spanned<String>>,
    pub marker: Option<Spanned<String>>,
    pub quit: Option<String>,
    pub quit_connect: Option<super::flavor::QuitMatch>,
    pub quit_logged_in: Option<super::flavor::QuitMatch>,
    pub login_success: Option<Vec<Spanned<String>>>,
    pub login_failure: Option<Vec<Spanned<String>>>,
    pub refused: Option<Vec<Spanned<String>>>,
    pub announcements: Option<Vec<Spanned<String>>>,
    pub login_confirm_timeout: Option<Spanned<Dur>>,
    pub banner_wait: Option<Spanned<Dur>>,
    pub passwordless: Option<bool>,
    pub create_logs_in: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_line: Option<usize>,
    pub write_timeout: Option<Spanned<Dur>>,
    pub max_unauthenticated: Option<usize>,
    pub conn_rate_per_ip: Option<f64>,
    pub conn_burst_per_ip: Option<u32>,
    pub input_lines_per_sec: Option<f64>,
    pub input_burst: Option<u32>,
    pub max_subnegotiation: Option<usize>,
    pub ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTelnet {
    pub mccp: Option<bool>,
    pub backend_mccp: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    pub servers: Option<Vec<Spanned<String>>>,
    pub subject_prefix: Option<Spanned<String>>,
    pub instance: Option<Spanned<String>>,
    pub publish_ip: Option<bool>,
    pub queue_size: Option<usize>,
    pub presence_interval: Option<Spanned<Dur>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub token: Option<String>,
    pub token_env: Option<Spanned<String>>,
    pub nkey_seed: Option<String>,
    pub nkey_seed_env: Option<Spanned<String>>,
    pub nkey_seed_file: Option<Spanned<String>>,
    pub credentials_file: Option<Spanned<String>>,
    pub tls: Option<bool>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<Dur>>,
    pub jetstream: Option<bool>,
    pub stream: Option<Spanned<String>>,
    pub stream_max_age: Option<Spanned<Dur>>,
    pub rpc_allow: Option<Vec<Spanned<String>>>,
    pub cluster: Option<Spanned<String>>,
    pub cluster_size: Option<Spanned<i64>>,
    pub lease: Option<Spanned<Dur>>,
    pub replicas: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIrc {
    pub server: Option<Spanned<String>>,
    pub tls: Option<bool>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_insecure: Option<bool>,
    pub server_password: Option<String>,
    pub server_password_env: Option<Spanned<String>>,
    pub nick: Option<String>,
    pub alt_nicks: Option<Vec<String>>,
    pub user: Option<String>,
    pub realname: Option<String>,
    pub channels: Option<Spanned<Vec<String>>>,
    pub sasl_user: Option<String>,
    pub sasl_password: Option<String>,
    pub sasl_password_env: Option<Spanned<String>>,
    pub nickserv_password: Option<String>,
    pub nickserv_password_env: Option<Spanned<String>>,
    pub post_logins: Option<bool>,
    pub colors: Option<bool>,
    pub admins: Option<Vec<String>>,
    pub admin_accounts: Option<Vec<String>>,
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<u32>,
    pub queue_size: Option<usize>,
    pub summarize_window: Option<Dur>,
    pub vanish_after: Option<Spanned<Dur>>,
    pub reconnect_max: Option<Dur>,
    #[serde(default)]
    pub formats: RawIrcFormats,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIrcFormats {
    pub down: Option<Spanned<String>>,
    pub up: Option<Spanned<String>>,
    pub standby_down: Option<Spanned<String>>,
    pub standby_up: Option<Spanned<String>>,
    pub failover: Option<Spanned<String>>,
    pub reload_failed: Option<Spanned<String>>,
    pub vanished: Option<Spanned<String>>,
    pub back: Option<Spanned<String>>,
    pub login: Option<Spanned<String>>,
    pub logout: Option<Spanned<String>>,
    pub logins_summary: Option<Spanned<String>>,
    pub logouts_summary: Option<Spanned<String>>,
    pub flapping: Option<Spanned<String>>,
    pub late: Option<Spanned<String>>,
}
