//! Telnet input parsing: strips IAC sequences, assembles lines and reports
//! negotiation commands and subnegotiations in the order they arrived.

pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
pub const SB: u8 = 250;
pub const GA: u8 = 249;
pub const SE: u8 = 240;

pub const OPT_TTYPE: u8 = 24;
pub const OPT_EOR: u8 = 25;
pub const OPT_NAWS: u8 = 31;
pub const OPT_MCCP2: u8 = 86;
pub const OPT_GMCP: u8 = 201;

pub const TTYPE_IS: u8 = 0;
pub const TTYPE_SEND: u8 = 1;

/// Longest input line kept; the rest of an over-long line is discarded.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest subnegotiation payload kept.
pub const MAX_SB: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Line(String),
    Will(u8),
    Wont(u8),
    Do(u8),
    Dont(u8),
    Sub(u8, Vec<u8>),
}

#[derive(Clone, Copy)]
enum St {
    Data,
    Iac,
    Neg(u8),
    SbOpt,
    Sb,
    SbIac,
}

pub struct Parser {
    st: St,
    line: Vec<u8>,
    sb_opt: u8,
    sb: Vec<u8>,
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            st: St::Data,
            line: Vec::new(),
            sb_opt: 0,
            sb: Vec::new(),
        }
    }

    fn push_data(&mut self, b: u8, out: &mut Vec<Event>) {
        match b {
            b'\n' => {
                let l = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                out.push(Event::Line(l));
            }
            b'\r' | 0 => {}
            _ => {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
            }
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) {
        for &b in input {
            self.st = match self.st {
                St::Data => {
                    if b == IAC {
                        St::Iac
                    } else {
                        self.push_data(b, out);
                        St::Data
                    }
                }
                St::Iac => match b {
                    IAC => {
                        self.push_data(IAC, out);
                        St::Data
                    }
                    WILL | WONT | DO | DONT => St::Neg(b),
                    SB => St::SbOpt,
                    _ => St::Data, // NOP, GA, AYT, SE without SB, ...: ignored
                },
                St::Neg(cmd) => {
                    out.push(match cmd {
                        WILL => Event::Will(b),
                        WONT => Event::Wont(b),
                        DO => Event::Do(b),
                        _ => Event::Dont(b),
                    });
                    St::Data
                }
                St::SbOpt => {
                    self.sb_opt = b;
                    self.sb.clear();
                    St::Sb
                }
                St::Sb => {
                    if b == IAC {
                        St::SbIac
                    } else {
                        if self.sb.len() < MAX_SB {
                            self.sb.push(b);
                        }
                        St::Sb
                    }
                }
                St::SbIac => match b {
                    SE => {
                        out.push(Event::Sub(self.sb_opt, std::mem::take(&mut self.sb)));
                        St::Data
                    }
                    IAC => {
                        if self.sb.len() < MAX_SB {
                            self.sb.push(IAC);
                        }
                        St::Sb
                    }
                    _ => St::Sb,
                },
            }
        }
    }
}

/// `IAC SB opt <payload with IAC doubled> IAC SE`
pub fn subneg(opt: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 6);
    v.extend_from_slice(&[IAC, SB, opt]);
    for &b in payload {
        v.push(b);
        if b == IAC {
            v.push(IAC);
        }
    }
    v.extend_from_slice(&[IAC, SE]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed() {
        let mut p = Parser::new();
        let mut ev = Vec::new();
        p.feed(b"he\xff\xfb\x1fl", &mut ev);
        p.feed(
            b"lo\r\n\xff\xfa\x1f\x00\x84\x00\xff\xff\xff\xf0x\n",
            &mut ev,
        );
        assert_eq!(
            ev,
            vec![
                Event::Will(31),
                Event::Line("hello".into()),
                Event::Sub(31, vec![0, 0x84, 0, 0xff]),
                Event::Line("x".into()),
            ]
        );
    }
}
