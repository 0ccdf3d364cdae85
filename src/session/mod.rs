//! One player's session: the state machine that relays, holds and logs the
//! player back in.
//!
//! ```text
//!            connect ok                 backend closed, probe says dead
//!  (start) ───────────▶ Relaying ─────────────────────────────────────▶ Held
//!     │                 ▲   │  backend marked down / failover            │
//!     │ backend down    │   └──────────────────────────────────────────▶ │
//!     └───────────────▶ │                                                │
//!                       │   marker back        connect + login + marker  │
//!                       └──────────── Relogin ◀──────────────────────────┘
//! ```
//!
//! Everything happens in one task with one `select!`: player input, backend
//! output, pool changes (up/down/failover), announcements, timers and
//! shutdown. Writes to the player happen in the branch bodies, so the
//! backend's output always reaches the player before anything that follows
//! it (half-close: the game's last words arrive before we decide what to do).

pub mod input;
mod watch;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch as tokio_watch};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::backend::connect::{connect, try_read_drain, BackendStream};
use crate::clientip;
use crate::config::Config;
use crate::events::Event;
use crate::login::{self, Credentials};
use crate::state::{peer_ip, Announcement, Phase, PoolState, Shared};
use crate::telnet::{self, TelnetEvent};
use input::{Input, Item};
use watch::{Kind, Outcome, Watch};

/// Bytes read from the backend per read call, at most. Bulk output (a long
/// `@dump`, a map) then costs a sixteenth of the system calls and wake-ups
/// it did at 32 KiB. The buffer lives for one read and its write (so a
/// player who stops reading holds at most this much, for at most
/// `limits.write_timeout`), and only the bytes read are ever touched.
const BACKEND_READ: usize = 512 * 1024;
/// Bytes read from the player per read call.
const CLIENT_READ: usize = 4 * 1024;
/// How long a backend gets to close after the quit command when a session
/// leaves it (failover, shutdown).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Grace for an immediate probe beyond `interval + timeout`.
const CHECK_GRACE: Duration = Duration::from_secs(1);
pub use crate::login::SYNC_RESEND;

/// Why a session ended (the `reason` of `session.close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The player closed the connection.
    PlayerClosed,
    /// The player typed QUIT.
    Quit,
    /// The game closed the connection while alive (e.g. `@boot`).
    Booted,
    /// Not logged in within `login_timeout`.
    LoginTimeout,
    /// Held longer than `outage.max_hold`.
    MaxHold,
    /// The proxy is stopping.
    Shutdown,
    /// The player stopped reading (write timed out or failed).
    WriteFailed,
    /// The player kept sending faster than `limits.input_lines_per_sec`.
    Flood,
}

impl End {
    /// The reason string used in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            End::PlayerClosed => "disconnected",
            End::Quit => "quit",
            End::Booted => "booted",
            End::LoginTimeout => "login_timeout",
            End::MaxHold => "max_hold",
            End::Shutdown => "shutdown",
            End::WriteFailed => "write_failed",
            End::Flood => "flood",
        }
    }
}

/// The backend side of a session.
struct BackendConn {
    name: String,
    stream: BackendStream,
    /// Telnet events out of the backend's bytes, MCCP2 undone.
    parser: telnet::Inbound,
    /// Boxed: only there while a login is being confirmed, so idle
    /// sessions do not carry its size.
    watch: Option<Box<Watch>>,
    /// When the connection was started: the heartbeat's answer about this
    /// backend counts only if its own connection is older.
    connected_at: Instant,
}

/// Runs one player's session to its end. `local` is the proxy address the
/// player connected to.
///
/// The session is built here, before the task's future, so the task stores
/// it once rather than also the arguments it was made from: an idle
/// session's memory is mostly its task (see `Session::run` for the rest).
pub fn run(
    shared: Arc<Shared>,
    id: u64,
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let span = info_span!("session", id, peer = %peer);
    let cfg = shared.config();
    if cfg.client_ip.reverse_dns {
        shared.rdns.prefetch(peer_ip(&peer));
    }
    span.in_scope(|| info!("session open"));
    shared.events.emit(
        Event::new("session.open")
            .with("session", id)
            .with_opt("ip", cfg.bus.publish_ip.then(|| peer_ip(&peer).to_string())),
    );
    let epoch = shared.pool.borrow().epoch;
    let mut s = Session {
        id,
        peer,
        local,
        input: Input::new(cfg.limits.max_subnegotiation),
        telnet: telnet::Policy::new(cfg.telnet.mccp, cfg.telnet.backend_mccp),
        epoch,
        shared,
        client,
        at_line_start: true,
        backend: None,
        user: None,
        creds: None,
        phase: Phase::Held,
        held_since: None,
        relogin_at: None,
        login_deadline: None,
        quit_sent: false,
        queue: VecDeque::new(),
        was_held: false,
        input_rate: crate::limiter::Bucket1::new(cfg.limits.input_burst),
        flood_drops: 0,
    };
    async move {
        let end = s.run().await;
        Box::pin(s.finish(end)).await;
    }
    .instrument(span)
}

struct Session {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    client: TcpStream,
    input: Input,
    /// Telnet negotiation for both sides and the player's MCCP2 stream.
    telnet: telnet::Policy,
    /// The last byte sent to the player ended a line (or a prompt).
    at_line_start: bool,
    backend: Option<BackendConn>,
    user: Option<String>,
    creds: Option<Credentials>,
    phase: Phase,
    /// When the current hold began.
    held_since: Option<Instant>,
    /// When to try connecting again (held).
    relogin_at: Option<Instant>,
    /// Close if not logged in by then.
    login_deadline: Option<Instant>,
    /// The player sent the quit command to the backend.
    quit_sent: bool,
    /// Lines typed while held or during a re-login, with their time.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Pool epoch seen last (a change means failover).
    epoch: u64,
    /// This session has been held at least once since it last relayed.
    was_held: bool,
    /// Input rate limit (`limits.input_lines_per_sec`).
    input_rate: crate::limiter::Bucket1,
    /// Lines dropped for flooding since the player was last warned.
    flood_drops: u32,
}

async fn sleep_opt(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn backend_readable(
    be: &Option<BackendConn>,
) -> impl std::future::Future<Output = io::Result<()>> + '_ {
    poll_fn(move |cx| match be {
        Some(b) => b.stream.poll_read_ready(cx),
        None => Poll::Pending,
    })
}

fn render(text: &str, cfg: &Config, backend: &str, downtime: Option<Duration>) -> String {
    text.replace("{game}", &cfg.game)
        .replace("{backend}", backend)
        .replace(
            "{downtime}",
            &downtime
                .map(fmt_duration)
                .unwrap_or_else(|| "a moment".into()),
        )
}

/// `93s` -> `1m 33s`: short and readable for notices.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

impl Session {
    fn cfg(&self) -> Arc<Config> {
        self.shared.config()
    }

    async fn run(&mut self) -> End {
        let mut pool_rx = self.shared.pool.subscribe();
        let mut announce_rx = self.shared.announce.subscribe();
        // Registered once for the whole session rather than on every turn
        // of the loop (each registration locks the token, which every
        // session shares).
        let shutdown = self.shared.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        // telnet: the proxy's own offers (MCCP2) come before anything else.
        // (Scoped, like the pool snapshot below, so it is not kept for the
        // life of the session.)
        {
            let mut greeting = Vec::new();
            self.telnet.greet(&mut greeting);
            if let Err(e) = self.write_client(&greeting).await {
                return e;
            }
        }
        // First contact: connect if the active backend may be up, else hold.
        // (In a block of its own so the pool snapshot is not kept for the
        // life of the session.)
        {
            let st = pool_rx.borrow_and_update().clone();
            if st.active_usable() {
                if let Err(e) = Box::pin(self.connect_backend(&st)).await {
                    return e;
                }
            }
            if self.backend.is_none() {
                let cfg = self.cfg();
                let msg = render(&cfg.notices.connecting, &cfg, &st.active, None);
                if let Err(e) = self.notice(&msg).await {
                    return e;
                }
                self.enter_held(false);
            }
        }
        loop {
            let deadline = self.next_deadline();
            // Not `biased`: a player who floods input must not starve the
            // game's output (or the other way round); tokio polls the
            // branches in random order.
            let r: Result<(), End> = tokio::select! {
                _ = &mut shutdown => Err(End::Shutdown),
                // Readiness and channel receives are cancel-safe: losing the
                // race to another branch consumes nothing. Readiness is
                // polled (`poll_read_ready`) rather than awaited through
                // `readable()`, whose futures would make every session's
                // task a few hundred bytes bigger.
                r = poll_fn(|cx| self.client.poll_read_ready(cx)) => match r {
                    Ok(()) => self.on_client_readable().await,
                    Err(_) => Err(End::PlayerClosed),
                },
                r = backend_readable(&self.backend) => self.on_backend_readable(r).await,
                Ok(()) = pool_rx.changed() => {
                    let st = pool_rx.borrow_and_update().clone();
                    Box::pin(self.on_pool(st)).await
                }
                a = announce_rx.recv() => match a {
                    Ok(a) => Box::pin(self.on_announce(a)).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
                },
                _ = sleep_opt(deadline) => Box::pin(self.on_timer(&pool_rx)).await,
            };
            if let Err(end) = r {
                return end;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let cfg = self.shared.config.borrow();
        let hold_end = match (self.held_since, cfg.outage.max_hold) {
            (Some(t), Some(m)) if self.backend.is_none() => Some(t + m),
            _ => None,
        };
        [
            self.backend
                .as_ref()
                .and_then(|b| b.watch.as_ref().map(|w| w.deadline)),
            self.backend
                .as_ref()
                .and_then(|b| b.watch.as_ref().and_then(|w| w.resend_at)),
            self.login_deadline,
            self.relogin_at,
            hold_end,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- player side -------------------------------------------------

    async fn on_client_readable(&mut self) -> Result<(), End> {
        let mut buf = Vec::with_capacity(CLIENT_READ);
        match try_read_drain(&self.client, &mut buf) {
            Ok(0) => return Err(End::PlayerClosed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(End::PlayerClosed),
        }
        let cfg = self.cfg();
        let mut items = Vec::new();
        self.input.feed(&buf, cfg.limits.max_line, &mut items);
        let mut to_backend: Vec<u8> = Vec::new();
        let mut to_player: Vec<u8> = Vec::new();
        for item in items {
            match item {
                // Boxed: its rare branches (notices while held) would
                // otherwise make every session's task bigger.
                Item::Line(line) => Box::pin(self.on_line(line, &cfg, &mut to_backend)).await?,
                Item::TooLong => {
                    self.flush_backend(&mut to_backend).await?;
                    // Boxed, rare: see `Item::Line`.
                    let msg = render(&cfg.notices.line_too_long, &cfg, "", None);
                    Box::pin(self.notice(&msg)).await?;
                }
                // telnet: commands pass; negotiations go through the policy,
                // which remembers them and answers what the player need not.
                Item::Command(c) => telnet::write_command(c, &mut to_backend),
                Item::Negotiation(verb, opt) => {
                    self.telnet
                        .from_player(verb, opt, &mut to_backend, &mut to_player)
                }
                Item::Subneg(opt, data) => self.telnet.from_player_sub(opt, &data, &mut to_backend),
            }
        }
        // (Also starts or ends the player's MCCP2 stream if it asked.)
        self.write_client(&to_player).await?;
        self.flush_backend(&mut to_backend).await
    }

    async fn on_line(
        &mut self,
        line: Vec<u8>,
        cfg: &Config,
        to_backend: &mut Vec<u8>,
    ) -> Result<(), End> {
        let l = &cfg.limits;
        if !self.input_rate.take(l.input_lines_per_sec, l.input_burst) {
            // Over the rate: warn once, drop the excess, and disconnect a
            // player who keeps it up for another burst's worth of lines.
            self.flood_drops += 1;
            if self.flood_drops == 1 {
                warn!("player is flooding; dropping input");
                self.flush_backend(to_backend).await?;
                self.notice(&render(&cfg.notices.flood, cfg, "", None))
                    .await?;
            }
            if self.flood_drops > l.input_burst {
                warn!(
                    dropped = self.flood_drops,
                    "disconnecting a flooding player"
                );
                return Err(End::Flood);
            }
            return Ok(());
        }
        if self.flood_drops > 0 && self.input_rate_recovered(cfg) {
            self.flood_drops = 0;
        }
        if clientip::is_spoof(&cfg.client_ip, &line) {
            warn!("dropped a player line that would set the client address");
            return Ok(());
        }
        let quit = login::is_quit(&line, &cfg.templates, self.user.is_some());
        let relaying = matches!(&self.backend, Some(b) if b.watch.as_ref().is_none_or(|w| !matches!(w.kind, Kind::Relogin)));
        if !relaying {
            if quit {
                self.notice("[holdfast] Goodbye.").await?;
                return Err(End::Quit);
            }
            if self.backend.is_some() {
                // Re-login in progress: keep the line for right after it.
                self.queue_line(line, cfg).await?;
            } else if cfg.outage.queue_input {
                self.queue_line(line, cfg).await?;
                self.notice(&render(&cfg.notices.queued_input, cfg, "", None))
                    .await?;
            } else {
                self.notice(&render(&cfg.notices.held_input, cfg, "", None))
                    .await?;
            }
            return Ok(());
        }
        if quit {
            self.quit_sent = true;
        }
        if self.user.is_none() {
            if let Some(creds) = login::parse_connect(&line) {
                let be = self.backend.as_mut().expect("relaying");
                if be.watch.is_none() {
                    debug!(user = %creds.name, "login attempt");
                    let deadline = Instant::now() + cfg.templates.login_confirm_timeout;
                    be.watch = Some(Box::new(Watch::new(
                        Kind::First(creds),
                        login::new_nonce(),
                        false,
                        deadline,
                    )));
                }
            }
        }
        telnet::escape_iac(&line, to_backend);
        to_backend.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The flood counter resets once the player is back under the rate
    /// with half a burst in hand.
    fn input_rate_recovered(&self, cfg: &Config) -> bool {
        let mut probe = self.input_rate;
        let half = (cfg.limits.input_burst / 2).max(1);
        (0..half).all(|_| probe.take(cfg.limits.input_lines_per_sec, cfg.limits.input_burst))
    }

    async fn queue_line(&mut self, line: Vec<u8>, cfg: &Config) -> Result<(), End> {
        if self.queue.len() >= cfg.outage.queue_max_lines {
            return self
                .notice("[holdfast] Too many lines waiting; that one was not kept.")
                .await;
        }
        self.queue.push_back((Instant::now(), line));
        Ok(())
    }

    /// Sends a notice on a line of its own.
    async fn notice(&mut self, text: &str) -> Result<(), End> {
        let mut v = Vec::with_capacity(text.len() + 4);
        if !self.at_line_start {
            v.extend_from_slice(b"\r\n");
        }
        telnet::escape_iac(text.as_bytes(), &mut v);
        v.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        self.write_client(&v).await
    }

    async fn write_client(&mut self, data: &[u8]) -> Result<(), End> {
        // telnet: compressed if the player took the proxy's MCCP2.
        let data = self.telnet.out.encode(data);
        if data.is_empty() {
            return Ok(());
        }
        let t = self.shared.config.borrow().limits.write_timeout;
        match timeout(t, self.client.write_all(&data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "write to player failed");
                Err(End::WriteFailed)
            }
            Err(_) => {
                warn!(timeout = ?t, "player stopped reading; dropping the session");
                Err(End::WriteFailed)
            }
        }
    }

    async fn on_announce(&mut self, a: Announcement) -> Result<(), End> {
        let on = self.backend.as_ref().map(|b| b.name.as_str());
        if a.backend.is_some() && a.backend.as_deref() != on {
            return Ok(());
        }
        self.notice(&a.text).await
    }

    // ----- backend side ------------------------------------------------

    async fn flush_backend(&mut self, data: &mut Vec<u8>) -> Result<(), End> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(be) = self.backend.as_mut() else {
            data.clear();
            return Ok(());
        };
        let t = self.shared.config.borrow().limits.write_timeout;
        let r = timeout(t, be.stream.write_all(data)).await;
        data.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            // The read side will see the close and decide; nothing to do here.
            Ok(Err(e)) => {
                debug!(error = %e, "write to backend failed");
                Ok(())
            }
            Err(_) => {
                warn!("backend stopped reading; treating it as gone");
                Box::pin(self.backend_closed()).await
            }
        }
    }

    async fn on_backend_readable(&mut self, r: io::Result<()>) -> Result<(), End> {
        if r.is_err() {
            return Box::pin(self.backend_closed()).await;
        }
        let Some(be) = self.backend.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(BACKEND_READ);
        match be.stream.try_read_drain(&mut buf) {
            Ok(0) => return Box::pin(self.backend_closed()).await,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Box::pin(self.backend_closed()).await,
        }
        self.on_backend_data(&buf).await
    }

    async fn on_backend_data(&mut self, data: &[u8]) -> Result<(), End> {
        // Fast path, the bulk of all traffic: plain text with no IAC in it,
        // between telnet sequences, while no login is being confirmed,
        // comes out exactly as it went in. Checking for IAC is the whole
        // parse, and the player gets the read buffer itself: no copy.
        if let Some(be) = &self.backend {
            if be.watch.is_none()
                && be.parser.is_idle()
                && memchr::memchr(telnet::IAC, data).is_none()
            {
                if let Some(&last) = data.last() {
                    self.at_line_start = last == b'\n';
                }
                return self.write_client(data).await;
            }
        }
        let cfg = self.cfg();
        let mut out = Vec::with_capacity(data.len() + 16);
        // May hold a re-login (password): wiped when dropped.
        let mut to_backend = zeroize::Zeroizing::new(Vec::new());
        let mut outcome = Outcome::Pending;
        let mut line_start_after = self.at_line_start;
        let decoded = {
            let be = self.backend.as_mut().expect("called with a backend");
            // Tracks where the player's line will stand once `out` is
            // written (which happens last, see below).
            let at_line_start = &mut line_start_after;
            let policy = &mut self.telnet;
            let creds = self.creds.as_ref();
            let t = &cfg.templates;
            let BackendConn { parser, watch, .. } = be;
            let was_compressed = parser.compressed();
            let r = parser.feed(data, |ev| {
                match ev {
                    TelnetEvent::Data(mut d) => {
                        if let Some(w) = watch.as_mut() {
                            if outcome == Outcome::Pending {
                                let mut plain = Vec::new();
                                let mut send_marker = false;
                                let mut send_login = false;
                                let (o, used) =
                                    w.feed(d, t, &mut plain, &mut send_marker, &mut send_login);
                                if send_login {
                                    // Synced: the game has the connection.
                                    debug!("re-login: marker back; sending the login");
                                    if let Some(c) = creds {
                                        to_backend.extend_from_slice(&login::render_login(
                                            &t.login,
                                            &c.verb,
                                            &c.name,
                                            &c.password,
                                        ));
                                    }
                                    send_marker = true;
                                }
                                if send_marker {
                                    to_backend.extend_from_slice(&login::render_nonce(
                                        &t.marker, &w.nonce,
                                    ));
                                }
                                if !plain.is_empty() {
                                    telnet::escape_iac(&plain, &mut out);
                                    *at_line_start = plain.last() == Some(&b'\n');
                                }
                                outcome = o;
                                d = &d[used..];
                            }
                        }
                        if !d.is_empty() {
                            telnet::escape_iac(d, &mut out);
                            *at_line_start = d.last() == Some(&b'\n');
                        }
                    }
                    TelnetEvent::Command(c) => {
                        let hiding = matches!(watch, Some(w) if matches!(w.kind, Kind::Relogin))
                            && outcome == Outcome::Pending;
                        if !hiding {
                            telnet::write_command(c, &mut out);
                            if c == telnet::GA || c == telnet::EOR {
                                *at_line_start = true;
                            }
                        }
                    }
                    // telnet: the policy answers what the player already did.
                    TelnetEvent::Negotiation { verb, option } => {
                        policy.from_backend(verb, option, &mut to_backend, &mut out)
                    }
                    TelnetEvent::Subnegotiation { option, data } => {
                        policy.from_backend_sub(option, data, &mut to_backend, &mut out)
                    }
                }
            });
            if !was_compressed && parser.compressed() {
                debug!("backend compresses (MCCP2)");
            }
            r
        };
        // Order matters. The marker goes to the game before the player sees
        // the line that triggered it, so anything the player types next is
        // answered after the marker. A decided login takes effect (and its
        // notices go out) before the output that followed the marker: the
        // player reads "logged back in" first, and whatever reacts to the
        // output (a test, a client trigger) finds the session logged in.
        self.flush_backend(&mut to_backend).await?;
        if let Err(e) = decoded {
            // telnet: nothing after a corrupt MCCP stream can be trusted;
            // what decoded before it is delivered.
            warn!(error = %e, backend = %self.backend_name(), "corrupt compressed stream from the backend");
            self.at_line_start = line_start_after;
            self.write_client(&out).await?;
            return Box::pin(self.hold("backend_error")).await;
        }
        match outcome {
            Outcome::Pending => {}
            Outcome::Confirmed => Box::pin(self.login_confirmed()).await?,
            Outcome::Failed(why) => Box::pin(self.login_failed(why)).await?,
        }
        if !out.is_empty() {
            self.at_line_start = line_start_after;
        }
        self.write_client(&out).await
    }

    async fn login_confirmed(&mut self) -> Result<(), End> {
        let Some(mut w) = self.backend.as_mut().and_then(|b| b.watch.take()) else {
            return Ok(());
        };
        let cfg = self.cfg();
        let backend = self.backend_name();
        // Output held back while deciding (a partial line) goes out now;
        // for a re-login the hidden transcript is dropped.
        let held = w.take_held();
        match w.kind {
            Kind::First(creds) => {
                self.write_out(&held).await?;
                info!(user = %creds.name, backend = %backend, "logged in");
                self.user = Some(creds.name.clone());
                self.shared.events.emit(
                    Event::new("session.login")
                        .with("session", self.id)
                        .with("user", creds.name.as_str()),
                );
                self.creds = Some(creds);
                self.login_deadline = None;
                let user = self.user.clone();
                self.shared.registry.update(self.id, |s| s.user = user);
            }
            Kind::Relogin => {
                let down = self.held_since.take().map(|t| t.elapsed());
                info!(user = ?self.user, backend = %backend, "logged back in");
                self.set_phase(Phase::Relaying);
                self.shared.events.emit(
                    Event::new("session.restored")
                        .with("session", self.id)
                        .with("user", self.user.clone())
                        .with("backend", backend.as_str()),
                );
                self.notice(&render(&cfg.notices.online, &cfg, &backend, down))
                    .await?;
                self.was_held = false;
                self.flush_queue().await?;
            }
        }
        Ok(())
    }

    async fn login_failed(&mut self, why: &'static str) -> Result<(), End> {
        let Some(mut w) = self.backend.as_mut().and_then(|b| b.watch.take()) else {
            return Ok(());
        };
        let held = w.take_held();
        self.write_out(&held).await?;
        match w.kind {
            Kind::First(creds) => {
                debug!(user = %creds.name, why, "login not confirmed");
            }
            Kind::Relogin => {
                let cfg = self.cfg();
                let backend = self.backend_name();
                warn!(user = ?self.user, backend = %backend, why, "re-login failed");
                self.creds = None;
                self.user = None;
                self.held_since = None;
                self.set_phase(Phase::Relaying);
                self.shared.registry.update(self.id, |s| s.user = None);
                self.login_deadline = cfg.listen.login_timeout.map(|t| Instant::now() + t);
                self.notice(&render(&cfg.notices.relogin_failed, &cfg, &backend, None))
                    .await?;
                self.flush_queue().await?;
            }
        }
        Ok(())
    }

    /// Writes backend text (telnet-free) to the player.
    async fn write_out(&mut self, text: &[u8]) -> Result<(), End> {
        if text.is_empty() {
            return Ok(());
        }
        let mut v = Vec::with_capacity(text.len());
        telnet::escape_iac(text, &mut v);
        self.at_line_start = text.last() == Some(&b'\n');
        self.write_client(&v).await
    }

    async fn flush_queue(&mut self) -> Result<(), End> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let cfg = self.cfg();
        let mut data = Vec::new();
        let mut stale = 0;
        while let Some((t, line)) = self.queue.pop_front() {
            if t.elapsed() > cfg.outage.queue_max_age {
                stale += 1;
                continue;
            }
            if login::is_quit(&line, &cfg.templates, self.user.is_some()) {
                self.quit_sent = true;
            }
            telnet::escape_iac(&line, &mut data);
            data.extend_from_slice(b"\r\n");
        }
        if stale > 0 {
            self.notice(&format!(
                "[holdfast] {stale} queued line(s) were too old and were not sent."
            ))
            .await?;
        }
        self.flush_backend(&mut data).await
    }

    fn backend_name(&self) -> String {
        self.backend
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default()
    }

    fn set_phase(&mut self, p: Phase) {
        self.phase = p;
        let backend = self.backend.as_ref().map(|b| b.name.clone());
        self.shared.registry.update(self.id, |s| {
            s.phase = p;
            if backend.is_some() {
                s.backend = backend;
            }
        });
    }

    /// The backend connection closed: the player quit or was booted if the
    /// game is alive, else the game went away and the player is held.
    async fn backend_closed(&mut self) -> Result<(), End> {
        let Some(be) = self.backend.take() else {
            return Ok(());
        };
        if self.quit_sent {
            return Err(End::Quit);
        }
        let cfg = self.cfg();
        let grace = cfg.heartbeat.interval + cfg.heartbeat.timeout + CHECK_GRACE;
        let alive = match self.shared.probe(&be.name) {
            Some(p) => timeout(grace, p.check_now(be.connected_at))
                .await
                .unwrap_or(false),
            None => false,
        };
        if alive {
            info!(backend = %be.name, "game closed the connection while alive");
            return Err(End::Booted);
        }
        info!(backend = %be.name, "backend gone; holding the session");
        self.backend = Some(be);
        self.hold("backend_down").await
    }

    /// Drops the backend connection and holds the player with the offline notice.
    async fn hold(&mut self, why: &'static str) -> Result<(), End> {
        let cfg = self.cfg();
        let (name, watch) = self
            .backend
            .take()
            .map(|b| (b.name, b.watch))
            .unwrap_or_default();
        if let Some(creds) = watch.and_then(|w| w.probable_credentials()) {
            // The game went away while confirming this player's login: try
            // it on re-login rather than make the player start over.
            debug!(user = %creds.name, "keeping an unconfirmed login for re-login");
            self.user = Some(creds.name.clone());
            self.creds = Some(creds);
            let user = self.user.clone();
            self.shared.registry.update(self.id, |s| s.user = user);
        }
        let msg = render(&cfg.notices.offline, &cfg, &name, None);
        self.enter_held(true);
        self.shared.events.emit(
            // SPEC lists `user` for held/restored: null before a login.
            Event::new("session.held")
                .with("session", self.id)
                .with("user", self.user.clone())
                .with("backend", name.as_str())
                .with("reason", why),
        );
        self.notice(&msg).await?;
        // Try again as soon as the pool says so (see on_pool), or after a
        // probe interval in case the pool has not noticed yet.
        let st = self.shared.pool.borrow().clone();
        if !st.is_down(&st.active) {
            self.relogin_at = Some(Instant::now() + cfg.heartbeat.interval);
        }
        Ok(())
    }

    fn enter_held(&mut self, outage: bool) {
        self.backend = None;
        self.login_deadline = None;
        if self.held_since.is_none() {
            self.held_since = Some(Instant::now());
        }
        self.was_held |= outage;
        self.set_phase(Phase::Held);
    }

    async fn on_pool(&mut self, st: PoolState) -> Result<(), End> {
        let moved = st.epoch != self.epoch;
        self.epoch = st.epoch;
        if let Some(be) = &self.backend {
            if moved && be.name != st.active {
                let cfg = self.cfg();
                let old = self.backend.take().expect("checked");
                info!(from = %old.name, to = %st.active, "moving to another backend");
                self.leave_backend(old).await;
                self.enter_held(false);
                let msg = render(&cfg.notices.failover, &cfg, &st.active, None);
                self.notice(&msg).await?;
                if st.active_usable() {
                    self.schedule_relogin(&cfg);
                }
                return Ok(());
            }
            if st.is_down(&be.name) && st.view(&be.name).is_some() {
                // The probe says the backend is gone though our connection
                // is still open: a frozen host. Do not wait for TCP to notice.
                info!(backend = %be.name, "backend marked down; holding the session");
                return self.hold("backend_down").await;
            }
            return Ok(());
        }
        if st.active_usable() && self.relogin_at.is_none() {
            let cfg = self.cfg();
            self.schedule_relogin(&cfg);
        }
        Ok(())
    }

    /// Ends a backend connection cleanly: the quit command if logged in.
    async fn leave_backend(&mut self, mut old: BackendConn) {
        if self.user.is_some() {
            let quit = format!("{}\r\n", self.cfg().templates.quit);
            // Send the quit command and let the game close the connection
            // itself (its goodbye is discarded), so it logs a clean quit
            // rather than a dropped link.
            let _ = timeout(LEAVE_TIMEOUT, async {
                old.stream.write_all(quit.as_bytes()).await?;
                let mut sink = Vec::with_capacity(4096);
                loop {
                    old.stream.readable().await?;
                    sink.clear();
                    match old.stream.try_read_buf(&mut sink) {
                        Ok(0) => return Ok::<(), io::Error>(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
        }
        let _ = timeout(LEAVE_TIMEOUT, old.stream.shutdown()).await;
    }

    fn schedule_relogin(&mut self, cfg: &Config) {
        let at = self.shared.relogin_limiter.reserve();
        let jitter = cfg.relogin.jitter;
        let j = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(rand::rng().random::<f64>())
        };
        self.relogin_at = Some(at + j);
    }

    async fn on_timer(&mut self, pool_rx: &tokio_watch::Receiver<PoolState>) -> Result<(), End> {
        let now = Instant::now();
        let cfg = self.cfg();
        if let Some(w) = self.backend.as_ref().and_then(|b| b.watch.as_ref()) {
            if w.deadline <= now {
                return self.login_failed("timed out").await;
            }
        }
        if let Some(w) = self.backend.as_mut().and_then(|b| b.watch.as_mut()) {
            if w.syncing && w.resend_at.is_some_and(|t| t <= now) {
                // Not admitted yet (or the marker was dropped): again.
                debug!("re-login: marker not back yet; sending it again");
                w.resend_at = Some(now + SYNC_RESEND);
                let mut m = login::render_nonce(&cfg.templates.marker, &w.nonce);
                self.flush_backend(&mut m).await?;
            }
        }
        if self.login_deadline.is_some_and(|t| t <= now) {
            self.notice(&render(&cfg.notices.login_timeout, &cfg, "", None))
                .await?;
            return Err(End::LoginTimeout);
        }
        if let (Some(t), Some(m), None) = (self.held_since, cfg.outage.max_hold, &self.backend) {
            if t + m <= now {
                let msg = render(&cfg.notices.max_hold, &cfg, "", Some(t.elapsed()));
                self.notice(&msg).await?;
                return Err(End::MaxHold);
            }
        }
        if self.relogin_at.is_some_and(|t| t <= now) {
            self.relogin_at = None;
            if self.backend.is_none() {
                let st = pool_rx.borrow().clone();
                if st.active_usable() {
                    self.connect_backend(&st).await?;
                    if self.backend.is_none() {
                        // Connect failed; the probe will tell, but retry
                        // anyway after an interval.
                        self.relogin_at = Some(now + cfg.heartbeat.interval);
                    }
                }
            }
        }
        Ok(())
    }

    /// Connects to the active backend: client-ip preamble, then (if the
    /// player was logged in) the login and the marker, hiding the output.
    async fn connect_backend(&mut self, st: &PoolState) -> Result<(), End> {
        let cfg = self.cfg();
        let Some(b) = cfg.backend(&st.active).cloned() else {
            return Ok(());
        };
        let connected_at = Instant::now();
        let mut stream = match connect(&b.addr, b.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                debug!(backend = %b.name, error = %e, "connect failed");
                if let Some(p) = self.shared.probe(&b.name) {
                    // Let the probe find out (in the background) so the pool
                    // learns of the outage without waiting for the interval.
                    tokio::spawn(async move {
                        p.check_now(Instant::now()).await;
                    });
                }
                return Ok(());
            }
        };
        let host = if cfg.client_ip.reverse_dns {
            self.shared.rdns.cached(peer_ip(&self.peer))
        } else {
            None
        };
        let mut first = clientip::preamble(&cfg.client_ip, self.peer, self.local, host.as_deref());
        let mut watch = None;
        if self.creds.is_some() && cfg.templates.sync && !cfg.templates.marker.is_empty() {
            // Sync first: the login follows once the marker comes back.
            let nonce = login::new_nonce();
            first.extend_from_slice(&login::render_nonce(&cfg.templates.marker, &nonce));
            let now = Instant::now();
            watch = Some(Box::new(Watch::syncing(
                nonce,
                now + cfg.relogin.timeout,
                now + SYNC_RESEND,
            )));
        } else if let Some(c) = &self.creds {
            let login = login::render_login(&cfg.templates.login, &c.verb, &c.name, &c.password);
            first.extend_from_slice(&login);
            let nonce = login::new_nonce();
            let marker = !cfg.templates.marker.is_empty();
            if marker {
                first.extend_from_slice(&login::render_nonce(&cfg.templates.marker, &nonce));
            }
            watch = Some(Box::new(Watch::new(
                Kind::Relogin,
                nonce,
                marker,
                Instant::now() + cfg.relogin.timeout,
            )));
        }
        let wrote = timeout(b.connect_timeout, stream.write_all(&first)).await;
        // The buffer held the password: wipe it.
        zeroize::Zeroize::zeroize(&mut first);
        if !matches!(wrote, Ok(Ok(()))) {
            debug!(backend = %b.name, "backend closed during connect");
            return Ok(());
        }
        let relogin = watch.is_some();
        self.backend = Some(BackendConn {
            name: b.name.clone(),
            stream,
            parser: telnet::Inbound::new(cfg.limits.max_subnegotiation),
            watch,
            connected_at,
        });
        // telnet: nothing is agreed with the new backend yet.
        self.telnet.backend_started();
        self.quit_sent = false;
        self.relogin_at = None;
        debug!(backend = %b.name, relogin, "connected to backend");
        if relogin {
            self.set_phase(Phase::Relogin);
        } else {
            self.set_phase(Phase::Relaying);
            self.login_deadline = cfg.listen.login_timeout.map(|t| Instant::now() + t);
            if self.held_since.take().is_some() && self.was_held {
                self.was_held = false;
                self.shared.events.emit(
                    Event::new("session.restored")
                        .with("session", self.id)
                        .with("user", self.user.clone())
                        .with("backend", b.name.as_str()),
                );
            }
            self.flush_queue().await?;
        }
        Ok(())
    }

    /// Closes both sides and reports the end.
    async fn finish(mut self, end: End) {
        if end == End::Shutdown {
            let cfg = self.cfg();
            let _ = self
                .notice(&render(&cfg.notices.stopping, &cfg, "", None))
                .await;
        }
        if let Some(be) = self.backend.take() {
            if end == End::Shutdown {
                self.leave_backend(be).await;
            }
        }
        // telnet: end the player's zlib stream cleanly.
        self.telnet.out.stop();
        let _ = self.write_client(&[]).await;
        let (plain, wire) = self.telnet.out.totals();
        if plain > 0 {
            debug!(mccp_in = plain, mccp_out = wire, "player compression");
        }
        let _ = timeout(Duration::from_secs(1), self.client.shutdown()).await;
        info!(reason = end.as_str(), user = ?self.user, "session closed");
        self.shared.registry.remove(self.id);
        self.shared.events.emit(
            Event::new("session.close")
                .with("session", self.id)
                .with_opt("user", self.user.clone())
                .with("reason", end.as_str()),
        );
    }
}
