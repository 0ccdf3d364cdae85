//! The IRC side: connect, register (server password, CAP, SASL PLAIN,
//! nick fallback, NickServ), join, answer PINGs, hand commands to the
//! relay, and post what waits in the [`Outbox`] at the configured pace.
//! When the connection ends it reconnects with exponential backoff; the
//! outbox, and so every notice that could not be posted, survives that.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{info, trace, warn};

use super::format::Formats;
use super::outbox::{Next, Notice, Outbox, Queued, RateLimit, Reply};
use super::proto::{self, fold, line, LineDecoder};
use super::transport::{self, Io};
use crate::config::Irc;

/// First wait before reconnecting; doubles up to `irc.reconnect_max`.
pub const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// A connection that lasted this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Registration (up to the welcome, `001`) must finish within this.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Keepalive period: PING when the server was silent this long, rejoin
/// lost channels, try to get the wanted nick back.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// No byte from the server for this long: the connection is dead.
pub const PING_TIMEOUT: Duration = Duration::from_secs(90);
/// A write to the server that makes no progress for this long fails.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// From the relay to the IRC side.
#[derive(Debug)]
pub enum ToIrc {
    /// Post to every channel.
    Notice(Notice),
    /// Post to every channel, marked late: it happened while the relay
    /// was away (read back from JetStream).
    Missed(Notice),
    /// Answer one target.
    Reply(Reply),
}

/// A `!command` seen on IRC, for the relay.
#[derive(Debug, Clone)]
pub struct Command {
    /// Where the answer goes: the channel, or the nick for a private message.
    pub reply_to: String,
    /// The sender's nick.
    pub nick: String,
    /// The sender's `nick!user@host`.
    pub mask: String,
    /// The sender's services account, if the server tells (IRCv3 `account-tag`).
    pub account: Option<String>,
    /// The text, starting with `!`.
    pub text: String,
}

/// Why a connection ended.
enum End {
    Shutdown,
    Lost(anyhow::Error),
}

/// Runs the IRC side until `shutdown`.
pub async fn run(
    cfg: Arc<Irc>,
    formats: Formats,
    mut rx: mpsc::Receiver<ToIrc>,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let mut outbox = Outbox::new(cfg.queue_size);
    let mut backoff = RECONNECT_MIN;
    loop {
        // Connecting: keep taking notices meanwhile (they are late now).
        let connecting = transport::connect(&cfg);
        tokio::pin!(connecting);
        let io = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = &mut connecting => break r,
                // mpsc::Receiver::recv is cancel-safe: a message is either
                // returned here or stays in the channel.
                m = rx.recv() => match m {
                    Some(m) => take(&mut outbox, m, false),
                    None => return,
                },
            }
        };
        let started = Instant::now();
        let end = match io {
            Ok(io) => {
                info!(server = %cfg.server, tls = cfg.tls, "connected to IRC");
                let mut link = Link::new(&cfg, &formats, io, &commands);
                link.run(&mut outbox, &mut rx, &shutdown).await
            }
            Err(e) => End::Lost(e),
        };
        outbox.clear_replies();
        match end {
            End::Shutdown => return,
            End::Lost(e) => {
                if started.elapsed() >= STABLE_AFTER {
                    backoff = RECONNECT_MIN;
                }
                warn!(server = %cfg.server, err = %format!("{e:#}"), retry_in = ?backoff, waiting = outbox.len(), "IRC connection lost");
            }
        }
        let until = tokio::time::Instant::now() + jitter(backoff);
        backoff = (backoff * 2).min(cfg.reconnect_max);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                m = rx.recv() => match m {
                    Some(m) => take(&mut outbox, m, false),
                    None => return,
                },
            }
        }
    }
}

/// Up to a quarter more, so many relays restarted together do not
/// reconnect in step.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() / 4.0)
}

/// Puts a message from the relay into the outbox; `online` says whether
/// the relay is connected (false: the notice will be posted late).
fn take(outbox: &mut Outbox, m: ToIrc, online: bool) {
    match m {
        ToIrc::Notice(n) => outbox.push(n, Instant::now(), !online),
        ToIrc::Missed(n) => outbox.push(n, Instant::now(), true),
        // A reply while offline answers nobody.
        ToIrc::Reply(r) if online => outbox.reply(r),
        ToIrc::Reply(_) => {}
    }
}

/// SASL progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sasl {
    Off,
    Started,
    Done,
    Failed,
}

/// One connection.
struct Link<'a> {
    cfg: &'a Irc,
    formats: &'a Formats,
    commands: &'a mpsc::Sender<Command>,
    lines: FramedRead<tokio::io::ReadHalf<Box<dyn Io>>, LineDecoder>,
    writer: WriteHalf<Box<dyn Io>>,
    nick: String,
    /// Index of the next nick to try (0 = `cfg.nick`, then `alt_nicks`, then generated).
    nick_try: usize,
    registered: bool,
    cap_ls: Vec<String>,
    caps: HashSet<String>,
    sasl: Sasl,
    joined: HashSet<String>,
    last_rx: Instant,
    /// The lines of the notice being posted (one per channel and piece),
    /// and the notice itself, put back if the link dies before the end.
    sending: Vec<String>,
    current: Option<Queued>,
    rate: RateLimit,
}

impl<'a> Link<'a> {
    fn new(
        cfg: &'a Irc,
        formats: &'a Formats,
        io: Box<dyn Io>,
        commands: &'a mpsc::Sender<Command>,
    ) -> Link<'a> {
        let (r, w) = tokio::io::split(io);
        Link {
            cfg,
            formats,
            commands,
            lines: FramedRead::new(r, LineDecoder::default()),
            writer: w,
            nick: cfg.nick.clone(),
            nick_try: 1,
            registered: false,
            cap_ls: Vec::new(),
            caps: HashSet::new(),
            sasl: Sasl::Off,
            joined: HashSet::new(),
            last_rx: Instant::now(),
            sending: Vec::new(),
            current: None,
            rate: RateLimit::new(cfg.rate, cfg.burst, Instant::now()),
        }
    }

    /// Sends one line. `secret` lines (PASS, AUTHENTICATE, IDENTIFY) are
    /// never logged.
    async fn send(&mut self, l: String, secret: bool) -> anyhow::Result<()> {
        if secret {
            trace!(line = "<hidden>", "irc >");
        } else {
            trace!(line = l.trim_end(), "irc >");
        }
        tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(l.as_bytes()))
            .await
            .map_err(|_| anyhow::anyhow!("write to the IRC server timed out"))??;
        Ok(())
    }

    /// In at least one channel: notices can go out.
    fn online(&self) -> bool {
        self.registered
            && self
                .cfg
                .channels
                .iter()
                .any(|c| self.joined.contains(&fold(c)))
    }

    async fn run(
        &mut self,
        outbox: &mut Outbox,
        rx: &mut mpsc::Receiver<ToIrc>,
        shutdown: &CancellationToken,
    ) -> End {
        match self.session(outbox, rx, shutdown).await {
            Ok(()) => End::Shutdown,
            Err(e) => {
                // Whatever was being posted goes out again next time.
                if let Some(q) = self.current.take() {
                    outbox.unpop(q);
                }
                End::Lost(e)
            }
        }
    }

    async fn session(
        &mut self,
        outbox: &mut Outbox,
        rx: &mut mpsc::Receiver<ToIrc>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.register().await?;
        let connected = Instant::now();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await; // the first tick is immediate
        loop {
            let can_send = self.online() && (!self.sending.is_empty() || !outbox.is_empty());
            let next_send = tokio::time::Instant::from_std(self.rate.ready_at(Instant::now()));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.send(line("QUIT", &["holdfast relay stopping"]), false).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
                    return Ok(());
                }
                // FramedRead's next() is cancel-safe: partial lines stay in
                // its buffer.
                l = self.lines.next() => match l {
                    Some(Ok(l)) => {
                        self.last_rx = Instant::now();
                        self.handle(&l).await?;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the server closed the connection"),
                },
                // Connected: a notice is not late just because the JOIN
                // has not come back yet (it waits milliseconds).
                m = rx.recv() => match m {
                    Some(m) => take(outbox, m, true),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(next_send), if can_send => {
                    if self.rate.try_take(Instant::now()) {
                        self.send_next(outbox).await?;
                    }
                }
                _ = keepalive.tick() => self.keepalive(connected).await?,
            }
        }
    }

    async fn register(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &self.cfg.server_password {
            self.send(line("PASS", &[p.expose()]), true).await?;
        }
        // Ask for capabilities first: registration then waits for CAP END,
        // which lets SASL finish before the welcome. A server without CAP
        // ignores it or answers 421, and registers us on NICK/USER anyway.
        self.send("CAP LS 302\r\n".into(), false).await?;
        let nick = self.cfg.nick.clone();
        self.send(line("NICK", &[&nick]), false).await?;
        let (user, real) = (self.cfg.user.clone(), self.cfg.realname.clone());
        self.send(line("USER", &[&user, "0", "*", &real]), false)
            .await?;
        Ok(())
    }

    /// Takes the next line to post and sends it.
    async fn send_next(&mut self, outbox: &mut Outbox) -> anyhow::Result<()> {
        if self.sending.is_empty() {
            self.current = None;
            match outbox.pop() {
                None => return Ok(()),
                Some(Next::Reply(r)) => {
                    for piece in proto::split_text(&r.text, proto::MAX_TEXT) {
                        self.sending.push(line("PRIVMSG", &[&r.target, &piece]));
                    }
                }
                Some(Next::Notice(q)) => {
                    let now = Instant::now();
                    let wall = time::OffsetDateTime::now_utc();
                    let mut texts = Vec::new();
                    if outbox.dropped > 0 {
                        texts.push(format!(
                            "({} older notices were dropped: the queue was full)",
                            std::mem::take(&mut outbox.dropped)
                        ));
                    }
                    let text = if q.is_late(now, wall) {
                        self.formats.late(&q.notice.text, q.notice.time, wall)
                    } else {
                        q.notice.text.clone()
                    };
                    texts.push(text);
                    let mut chans: Vec<&String> = self
                        .cfg
                        .channels
                        .iter()
                        .filter(|c| self.joined.contains(&fold(c)))
                        .collect();
                    chans.dedup();
                    for t in &texts {
                        for piece in proto::split_text(t, proto::MAX_TEXT) {
                            for c in &chans {
                                self.sending.push(line("PRIVMSG", &[c, &piece]));
                            }
                        }
                    }
                    self.current = Some(q);
                }
            }
            // Sent front to back.
            self.sending.reverse();
        }
        if let Some(l) = self.sending.pop() {
            self.send(l, false).await?;
        }
        if self.sending.is_empty() {
            self.current = None;
        }
        Ok(())
    }

    async fn keepalive(&mut self, connected: Instant) -> anyhow::Result<()> {
        let silent = self.last_rx.elapsed();
        if silent >= PING_TIMEOUT {
            anyhow::bail!("no answer from the server for {silent:?}");
        }
        if !self.registered {
            if connected.elapsed() >= REGISTER_TIMEOUT {
                anyhow::bail!("registration did not finish in {REGISTER_TIMEOUT:?}");
            }
            return Ok(());
        }
        if silent >= KEEPALIVE {
            self.send(line("PING", &["holdfast"]), false).await?;
        }
        self.join_missing().await?;
        if fold(&self.nick) != fold(&self.cfg.nick) {
            // Try to get the wanted nick back; a 433 now is simply ignored.
            let n = self.cfg.nick.clone();
            self.send(line("NICK", &[&n]), false).await?;
        }
        Ok(())
    }

    async fn join_missing(&mut self) -> anyhow::Result<()> {
        let missing: Vec<String> = self
            .cfg
            .channels
            .iter()
            .filter(|c| !self.joined.contains(&fold(c)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.send(format!("JOIN {}\r\n", missing.join(",")), false)
                .await?;
        }
        Ok(())
    }
}

mod incoming;
#[cfg(test)]
mod tests;
