//! What the server says: PING, CAP and SASL during registration, nick
//! fallback, the welcome (NickServ, joins), channel membership, and
//! `!commands` handed to the relay.

use tracing::{debug, info, trace, warn};

use super::{Command, Link, Sasl};
use crate::irc::proto::{self, fold, is_channel, line, Message};

impl Link<'_> {
    fn is_me(&self, m: &Message) -> bool {
        fold(m.nick()) == fold(&self.nick)
    }

    async fn cap_end(&mut self) -> anyhow::Result<()> {
        self.send("CAP END\r\n".into(), false).await
    }

    pub(super) async fn handle(&mut self, raw: &str) -> anyhow::Result<()> {
        let Some(m) = Message::parse(raw) else {
            return Ok(());
        };
        if m.command != "PRIVMSG" {
            trace!(line = raw, "irc <");
        }
        match m.command.as_str() {
            "PING" => {
                let p = m.param(0).to_string();
                self.send(line("PONG", &[&p]), false).await?;
            }
            "CAP" => self.on_cap(&m).await?,
            "AUTHENTICATE" if m.param(0) == "+" && self.sasl == Sasl::Started => {
                let (Some(u), Some(p)) = (&self.cfg.sasl_user, &self.cfg.sasl_password) else {
                    return Ok(());
                };
                for chunk in proto::sasl_plain(u, p.expose()) {
                    self.send(format!("AUTHENTICATE {chunk}\r\n"), true).await?;
                }
            }
            "903" => {
                info!(account = ?self.cfg.sasl_user, "SASL login succeeded");
                self.sasl = Sasl::Done;
                self.cap_end().await?;
            }
            "902" | "904" | "905" | "906" | "907" | "908" if self.sasl == Sasl::Started => {
                warn!(code = %m.command, msg = m.params.last().map(String::as_str).unwrap_or(""), "SASL login failed; going on without it");
                self.sasl = Sasl::Failed;
                self.cap_end().await?;
            }
            "001" => {
                self.registered = true;
                self.nick = m.param(0).to_string();
                info!(nick = %self.nick, "registered on IRC");
                if self.sasl != Sasl::Done {
                    if let Some(p) = &self.cfg.nickserv_password {
                        let who = self.cfg.sasl_user.as_deref().unwrap_or(&self.cfg.nick);
                        let l = line(
                            "PRIVMSG",
                            &["NickServ", &format!("IDENTIFY {who} {}", p.expose())],
                        );
                        self.send(l, true).await?;
                    }
                }
                self.join_missing().await?;
            }
            "432" | "433" | "436" | "437" if !self.registered => {
                let next = self.next_nick();
                info!(taken = m.param(1), trying = %next, "nick not available");
                self.nick = next.clone();
                self.send(line("NICK", &[&next]), false).await?;
            }
            "464" => anyhow::bail!("the server refused the password (464)"),
            "465" => anyhow::bail!("banned from the server (465): {}", m.param(1)),
            "ERROR" => anyhow::bail!("server error: {}", m.param(0)),
            "NICK" if self.is_me(&m) => {
                self.nick = m.param(0).to_string();
                info!(nick = %self.nick, "nick changed");
            }
            "JOIN" if self.is_me(&m) => {
                let c = m.param(0).to_string();
                info!(channel = %c, "joined");
                self.joined.insert(fold(&c));
            }
            "PART" if self.is_me(&m) => {
                self.joined.remove(&fold(m.param(0)));
            }
            "KICK" if fold(m.param(1)) == fold(&self.nick) => {
                warn!(
                    channel = m.param(0),
                    by = m.nick(),
                    reason = m.param(2),
                    "kicked; rejoining later"
                );
                self.joined.remove(&fold(m.param(0)));
            }
            "403" | "405" | "471" | "473" | "474" | "475" | "477" | "489" => {
                warn!(code = %m.command, channel = m.param(1), msg = m.param(2), "cannot join");
            }
            "404" => warn!(
                channel = m.param(1),
                msg = m.param(2),
                "cannot send to channel"
            ),
            "PRIVMSG" => self.on_privmsg(&m).await,
            _ => {}
        }
        Ok(())
    }

    fn next_nick(&mut self) -> String {
        let i = self.nick_try;
        self.nick_try += 1;
        if let Some(n) = self.cfg.alt_nicks.get(i - 1) {
            return n.clone();
        }
        let base: String = self.cfg.nick.chars().take(12).collect();
        match i - self.cfg.alt_nicks.len() {
            1 => format!("{base}_"),
            2 => format!("{base}__"),
            _ => format!("{base}{}", rand::random_range(100..1000)),
        }
    }

    async fn on_cap(&mut self, m: &Message) -> anyhow::Result<()> {
        match m.param(1) {
            "LS" => {
                // `CAP * LS * :...` means more lines follow.
                let more = m.params.len() > 3 && m.param(2) == "*";
                let list = m.params.last().map(String::as_str).unwrap_or("");
                self.cap_ls
                    .extend(list.split_whitespace().map(|c| c.to_string()));
                if more {
                    return Ok(());
                }
                let offered = |name: &str| {
                    self.cap_ls
                        .iter()
                        .any(|c| c == name || c.starts_with(&format!("{name}=")))
                };
                let mut want = Vec::new();
                if offered("account-tag") {
                    want.push("account-tag");
                }
                let sasl_cfg = self.cfg.sasl_user.is_some() && self.cfg.sasl_password.is_some();
                if sasl_cfg {
                    if offered("sasl") {
                        want.push("sasl");
                    } else {
                        warn!("SASL is configured but the server does not offer it");
                    }
                }
                debug!(offered = ?self.cap_ls, ?want, "capabilities");
                if want.is_empty() {
                    self.cap_end().await?;
                } else {
                    self.send(format!("CAP REQ :{}\r\n", want.join(" ")), false)
                        .await?;
                }
            }
            "ACK" => {
                let list = m.params.last().map(String::as_str).unwrap_or("");
                for c in list.split_whitespace() {
                    self.caps.insert(c.trim_start_matches('-').to_string());
                }
                if self.caps.contains("sasl") && self.sasl == Sasl::Off {
                    self.sasl = Sasl::Started;
                    self.send("AUTHENTICATE PLAIN\r\n".into(), false).await?;
                } else if self.sasl != Sasl::Started && !self.registered {
                    self.cap_end().await?;
                }
            }
            "NAK" if !self.registered => self.cap_end().await?,
            _ => {}
        }
        Ok(())
    }

    async fn on_privmsg(&mut self, m: &Message) {
        let (target, text) = (m.param(0), m.param(1));
        if !text.starts_with('!') || self.is_me(m) {
            return;
        }
        let reply_to = if is_channel(target) {
            target.to_string()
        } else {
            m.nick().to_string()
        };
        let c = Command {
            reply_to,
            nick: m.nick().to_string(),
            mask: m.prefix.clone().unwrap_or_default(),
            account: m.tag("account").map(String::from),
            text: text.to_string(),
        };
        debug!(from = %c.mask, to = %c.reply_to, text = %c.text, "command");
        // try_send: a flood of commands must not stall the connection.
        if self.commands.try_send(c).is_err() {
            debug!("command dropped: the relay is busy");
        }
    }
}
