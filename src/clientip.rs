//! Telling the game the player's real address: the first bytes of every
//! backend connection (`@remotehost`, a HAProxy PROXY header, or PennMUSH's
//! `IP^HOSTNAME` line).

use std::net::{IpAddr, SocketAddr};

use crate::config::{ClientIp, ClientIpMode};

/// The PROXY protocol v2 signature (spec section 2.2).
pub const PROXY_V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The bytes to send first on a backend connection for a player at `peer`
/// who reached the proxy on `local`. `host` is the name for PennMUSH's
/// header (the IP unless reverse DNS found one).
pub fn preamble(
    cfg: &ClientIp,
    peer: SocketAddr,
    local: SocketAddr,
    host: Option<&str>,
) -> Vec<u8> {
    let ip = peer_ip(&peer);
    match cfg.mode {
        ClientIpMode::None => Vec::new(),
        ClientIpMode::Command => {
            let mut v = cfg.command.replace("{ip}", &ip.to_string()).into_bytes();
            v.extend_from_slice(b"\r\n");
            v
        }
        ClientIpMode::Pennmush => {
            let ip_s = ip.to_string();
            format!("{}^{}\r\n", ip_s, host.unwrap_or(&ip_s)).into_bytes()
        }
        ClientIpMode::ProxyV1 => proxy_v1(SocketAddr::new(ip, peer.port()), local),
        ClientIpMode::ProxyV2 => proxy_v2(SocketAddr::new(ip, peer.port()), local),
    }
}

/// A PROXY protocol v1 line, e.g. `PROXY TCP4 1.2.3.4 5.6.7.8 1111 4201\r\n`.
pub fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let dst_ip = match (src.ip(), peer_ip(&dst)) {
        // Both addresses must be of one family; map a v4 destination into v6
        // when the source is v6 (and the other way round when possible).
        (IpAddr::V6(_), IpAddr::V4(d)) => IpAddr::V6(d.to_ipv6_mapped()),
        (_, d) => d,
    };
    let fam = if src.is_ipv4() && dst_ip.is_ipv4() {
        "TCP4"
    } else {
        "TCP6"
    };
    let src_ip = match (src.ip(), fam) {
        (IpAddr::V4(s), "TCP6") => IpAddr::V6(s.to_ipv6_mapped()),
        (s, _) => s,
    };
    format!(
        "PROXY {fam} {src_ip} {dst_ip} {} {}\r\n",
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A PROXY protocol v2 header (binary, command PROXY, TCP over IPv4/IPv6).
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 36);
    v.extend_from_slice(&PROXY_V2_SIG);
    v.push(0x21); // version 2, command PROXY
    let dst_ip = peer_ip(&dst);
    match (src.ip(), dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v.push(0x11); // AF_INET, STREAM
            v.extend_from_slice(&12u16.to_be_bytes());
            v.extend_from_slice(&s.octets());
            v.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            v.push(0x21); // AF_INET6, STREAM
            v.extend_from_slice(&36u16.to_be_bytes());
            v.extend_from_slice(&v6(s).octets());
            v.extend_from_slice(&v6(d).octets());
        }
    }
    v.extend_from_slice(&src.port().to_be_bytes());
    v.extend_from_slice(&dst.port().to_be_bytes());
    v
}

/// True if a player's line would be the client-ip command (spoofing): its
/// first word equals the command's, case-insensitively, after leading spaces.
pub fn is_spoof(cfg: &ClientIp, line: &[u8]) -> bool {
    if cfg.command_word.is_empty() {
        return false;
    }
    let line = line.trim_ascii_start();
    let word_end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    line[..word_end].eq_ignore_ascii_case(cfg.command_word.as_bytes())
}

/// A socket address as a session keeps it: the IP and the port, in 20
/// bytes instead of a `SocketAddr`'s 32 (a session keeps two, and every
/// session's task is the memory of an idle player, issue 25). An IPv6
/// address's flow label and scope are not kept: nothing a session does
/// with its addresses (logs, `client_ip`, the per-address limits) uses
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    ip: IpAddr,
    port: u16,
}

impl Addr {
    /// As a `SocketAddr`.
    pub fn get(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// The player's IP as the game should see it: an IPv4-mapped IPv6
/// address becomes the IPv4 address.
pub fn peer_ip(peer: &SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4() {
        let h = proxy_v1(sa("127.0.0.2:51000"), sa("127.0.0.1:4201"));
        assert_eq!(h, b"PROXY TCP4 127.0.0.2 127.0.0.1 51000 4201\r\n");
    }

    #[test]
    fn v1_tcp6() {
        let h = proxy_v1(sa("[::1]:51000"), sa("[::1]:4201"));
        assert_eq!(h, b"PROXY TCP6 ::1 ::1 51000 4201\r\n");
    }

    #[test]
    fn v2_tcp4_bytes() {
        let h = proxy_v2(sa("127.0.0.2:51000"), sa("127.0.0.1:4201"));
        let mut want = PROXY_V2_SIG.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 2, 127, 0, 0, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&4201u16.to_be_bytes());
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn v2_tcp6_len() {
        let h = proxy_v2(sa("[::1]:1"), sa("[::1]:2"));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 36]);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn spoof_detection() {
        let cfg = ClientIp {
            mode: ClientIpMode::Command,
            command: "@remotehost {ip}".into(),
            command_word: "@remotehost".into(),
            reverse_dns: false,
        };
        assert!(is_spoof(&cfg, b"@remotehost 6.6.6.6"));
        assert!(is_spoof(&cfg, b"   @REMOTEHOST 6.6.6.6"));
        assert!(is_spoof(&cfg, b"@remotehost"));
        assert!(!is_spoof(&cfg, b"say @remotehost"));
        assert!(!is_spoof(&cfg, b"@remotehostx 1"));
    }
}
