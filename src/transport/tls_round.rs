//! One round of rustls's unbuffered server state machine over the bytes
//! in hand, without I/O: records processed until rustls needs more
//! bytes, handshake output and decrypted bytes appended to the caller's
//! buffers. [`super::tls::TlsConn`] feeds it what its socket read and
//! writes what it produced.

use tokio_rustls::rustls;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, InsufficientSizeError, WriteTraffic,
};

/// The server side's connection data, as rustls types it.
pub(super) type Data = rustls::server::ServerConnectionData;

/// What to do once rustls may send application data.
type Traffic<'a> = &'a mut dyn FnMut(&mut WriteTraffic<'_, Data>);

/// One round of rustls over `buf`: records processed until it needs more
/// bytes (or both sides closed). Handshake output is appended to `out`,
/// decrypted bytes to `plain`; at the traffic state `traffic` (if any)
/// runs. The bytes of `buf` used; on an error, those and the error.
pub(super) fn drive(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    peer_closed: &mut bool,
    mut traffic: Option<Traffic<'_>>,
) -> Result<usize, (usize, rustls::Error)> {
    let mut used = 0;
    loop {
        let st = conn.process_tls_records(&mut buf[used..]);
        let discard = st.discard;
        let state = match st.state {
            Ok(s) => s,
            Err(e) => {
                // rustls queued the alert for this error as output, which
                // the next round hands over (before it looks at input).
                let used = used + discard;
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) =
                    conn.process_tls_records(&mut buf[used..]).state
                {
                    let _ = encode(&mut enc, out);
                }
                return Err((used, e));
            }
        };
        let mut extra = 0;
        let stop = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(|e| (used + discard, e))?;
                    extra += rec.discard;
                    plain.extend_from_slice(rec.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut enc) => {
                encode(&mut enc, out).map_err(|e| (used + discard, e))?;
                None
            }
            // Sent in order with the rest of `out` by the caller.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                None
            }
            ConnectionState::Closed => Some(()),
            ConnectionState::BlockedHandshake => Some(()),
            ConnectionState::WriteTraffic(mut w) => {
                if let Some(f) = traffic.take() {
                    f(&mut w);
                }
                Some(())
            }
            // The config accepts no early data.
            ConnectionState::ReadEarlyData(_) => {
                return Err((
                    used + discard,
                    rustls::Error::General("early data not expected".into()),
                ))
            }
            _ => {
                return Err((
                    used + discard,
                    rustls::Error::General("unknown TLS state".into()),
                ))
            }
        };
        used += discard + extra;
        if stop.is_some() {
            return Ok(used);
        }
    }
}

/// Appends a handshake record to `out`.
fn encode(enc: &mut EncodeTlsData<'_, Data>, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
    let at = out.len();
    let need = match enc.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(rustls::Error::General(e.to_string())),
    };
    out.resize(at + need, 0);
    match enc.encode(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(rustls::Error::General(e.to_string()))
        }
    }
}
