//! Registration and the session loop against a scripted server on an
//! in-memory pipe: CAP, SASL PLAIN, nick fallback, NickServ, PING, commands
//! and posting.

use super::*;
use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

fn irc(extra: &str) -> Irc {
    let text = format!(
        "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n[irc]\nchannels = [\"#c\"]\n{extra}"
    );
    crate::config::Config::parse(std::path::Path::new("t.toml"), &text)
        .unwrap()
        .irc
        .unwrap()
}

struct Server {
    r: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    w: tokio::io::WriteHalf<DuplexStream>,
}

impl Server {
    async fn expect(&mut self, want: &str) {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut l))
            .await
            .unwrap_or_else(|_| panic!("client never sent {want:?}"))
            .unwrap();
        assert_eq!(l.trim_end(), want);
    }

    async fn send(&mut self, l: &str) {
        self.w
            .write_all(format!("{l}\r\n").as_bytes())
            .await
            .unwrap();
    }
}

struct Harness {
    server: Server,
    to_irc: mpsc::Sender<ToIrc>,
    commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

/// Starts a link over a pipe; the task returns true on a clean shutdown.
fn start(cfg: Irc) -> Harness {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(b);
    let (to_irc, mut rx) = mpsc::channel(16);
    let (cmd_tx, commands) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        let formats = Formats::new(&cfg.formats, false);
        let mut outbox = Outbox::new(10);
        let mut link = Link::new(&cfg, &formats, Box::new(a), &cmd_tx);
        matches!(link.run(&mut outbox, &mut rx, &sd).await, End::Shutdown)
    });
    Harness {
        server: Server {
            r: BufReader::new(r),
            w,
        },
        to_irc,
        commands,
        shutdown,
        task,
    }
}

#[tokio::test]
async fn sasl_registration_commands_and_posting() {
    let mut h = start(irc(
        "server_password = \"spw\"\nsasl_user = \"bot\"\nsasl_password = \"pw\"\nnickserv_password = \"unused\"",
    ));
    let s = &mut h.server;
    s.expect("PASS :spw").await;
    s.expect("CAP LS 302").await;
    s.expect("NICK :holdfast").await;
    s.expect("USER holdfast 0 * :holdfast relay").await;
    s.send(":srv CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL")
        .await;
    s.send(":srv CAP * LS :account-tag").await;
    s.expect("CAP REQ :account-tag sasl").await;
    s.send(":srv CAP holdfast ACK :account-tag sasl").await;
    s.expect("AUTHENTICATE PLAIN").await;
    s.send("AUTHENTICATE +").await;
    s.expect("AUTHENTICATE Ym90AGJvdABwdw==").await;
    s.send(":srv 900 holdfast holdfast!u@h bot :You are now logged in")
        .await;
    s.send(":srv 903 holdfast :SASL authentication successful")
        .await;
    s.expect("CAP END").await;
    s.send(":srv 001 holdfast :Welcome").await;
    // SASL worked: no NickServ IDENTIFY.
    s.expect("JOIN #c").await;
    s.send(":holdfast!u@h JOIN #c").await;
    s.send("PING :tok").await;
    s.expect("PONG :tok").await;

    s.send("@account=wiz :boss!b@staff PRIVMSG #c :!status m1")
        .await;
    s.send(":eve!e@h PRIVMSG #c :hello, no command").await;
    s.send(":eve!e@h PRIVMSG holdfast :!help").await;
    let c = h.commands.recv().await.unwrap();
    assert_eq!(
        (
            c.reply_to.as_str(),
            c.mask.as_str(),
            c.account.as_deref(),
            c.text.as_str()
        ),
        ("#c", "boss!b@staff", Some("wiz"), "!status m1")
    );
    let c = h.commands.recv().await.unwrap();
    assert_eq!((c.reply_to.as_str(), c.account), ("eve", None));

    let n = Notice {
        text: "[m1] G is DOWN\r\nQUIT".into(),
        prio: super::super::outbox::Prio::High,
        time: time::OffsetDateTime::now_utc(),
    };
    h.to_irc.send(ToIrc::Notice(n)).await.unwrap();
    h.server.expect("PRIVMSG #c :[m1] G is DOWN  QUIT").await;
    h.to_irc
        .send(ToIrc::Reply(Reply {
            target: "eve".into(),
            text: "hi".into(),
        }))
        .await
        .unwrap();
    h.server.expect("PRIVMSG eve :hi").await;

    h.shutdown.cancel();
    h.server.expect("QUIT :holdfast relay stopping").await;
    assert!(h.task.await.unwrap());
}

#[tokio::test]
async fn nick_fallback_nickserv_and_no_cap() {
    let mut h = start(irc("alt_nicks = [\"hf2\"]\nnickserv_password = \"nspw\""));
    let s = &mut h.server;
    s.expect("CAP LS 302").await;
    s.expect("NICK :holdfast").await;
    s.expect("USER holdfast 0 * :holdfast relay").await;
    s.send(":srv 421 * CAP :Unknown command").await;
    s.send(":srv 433 * holdfast :Nickname is already in use")
        .await;
    s.expect("NICK :hf2").await;
    s.send(":srv 433 * hf2 :Nickname is already in use").await;
    s.expect("NICK :holdfast_").await;
    s.send(":srv 001 holdfast_ :Welcome").await;
    s.expect("PRIVMSG NickServ :IDENTIFY holdfast nspw").await;
    s.expect("JOIN #c").await;
    // Nothing is posted before the relay is in a channel; then it is (not
    // marked late: it waited for the JOIN, not for a connection).
    let n = Notice {
        text: "[m1] early".into(),
        prio: super::super::outbox::Prio::High,
        time: time::OffsetDateTime::now_utc(),
    };
    h.to_irc.send(ToIrc::Notice(n)).await.unwrap();
    h.server.send(":holdfast_!u@h JOIN :#c").await;
    let mut l = String::new();
    h.server.r.read_line(&mut l).await.unwrap();
    assert_eq!(l.trim_end(), "PRIVMSG #c :[m1] early");
    // Kicked: the channel is no longer counted as joined.
    h.server.send(":op!o@h KICK #c holdfast_ :bye").await;
    h.server.send(":srv ERROR :Closing link").await;
    assert!(!h.task.await.unwrap(), "an ERROR ends the link as lost");
}

#[tokio::test]
async fn sasl_failure_goes_on() {
    let mut h = start(irc("sasl_password = \"bad\""));
    let s = &mut h.server;
    s.expect("CAP LS 302").await;
    s.expect("NICK :holdfast").await;
    s.expect("USER holdfast 0 * :holdfast relay").await;
    s.send(":srv CAP * LS :sasl").await;
    s.expect("CAP REQ :sasl").await;
    s.send(":srv CAP holdfast ACK :sasl").await;
    s.expect("AUTHENTICATE PLAIN").await;
    s.send("AUTHENTICATE +").await;
    // The account defaults to the nick.
    s.expect("AUTHENTICATE aG9sZGZhc3QAaG9sZGZhc3QAYmFk").await;
    s.send(":srv 904 holdfast :SASL authentication failed")
        .await;
    s.expect("CAP END").await;
    s.send(":srv 001 holdfast :Welcome").await;
    s.expect("JOIN #c").await;
    h.shutdown.cancel();
    assert!(h.task.await.unwrap());
}
