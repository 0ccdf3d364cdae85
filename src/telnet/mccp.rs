//! MCCP2/MCCP3 stream compression (zlib, RFC 1950).
//!
//! With MCCP2 the server sends `IAC SB 86 IAC SE` and everything after it is
//! one zlib stream until that stream ends (then plain telnet resumes, and
//! compression may be started again later). MCCP3 is the same in the client
//! to server direction. The proxy has to inflate what the game sends in
//! order to parse it, and may deflate what it relays to a player that asked
//! for compression.
//!
//! Inflation is bounded per call ([`Inflater::decompress`]'s `max_out`) so a
//! few kilobytes of hostile input can't make the proxy allocate gigabytes in
//! one go; deflation sync-flushes on every call so that each relayed write
//! can be decoded by the player immediately.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::fmt;

/// How far one [`Inflater::decompress`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input was consumed and all output it yields was produced; the
    /// compressed stream continues in later input.
    NeedInput,
    /// The `max_out` limit was reached after consuming this many input
    /// bytes. Call again with `input[n..]` (even if that is empty: the
    /// inflater may still hold pending output).
    OutputFull(usize),
    /// The zlib stream ended after this many input bytes (checksum
    /// included): `input[n..]` is plain telnet again. The inflater must be
    /// [`reset`](Inflater::reset) (or replaced) before the next stream.
    StreamEnd(usize),
}

/// Error from [`Inflater::decompress`]: the compressed stream is corrupt.
///
/// The stream cannot be recovered; the caller should drop the connection
/// (or at least stop treating the rest of it as data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MccpError {
    msg: String,
}

impl fmt::Display for MccpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt MCCP stream: {}", self.msg)
    }
}

impl std::error::Error for MccpError {}

/// Output is produced in steps of at most this size, so a small input with a
/// large `max_out` doesn't cost a large zero-filled buffer.
const INFLATE_STEP: usize = 32 * 1024;

/// Inflates an MCCP2/3 zlib stream fed in chunks.
pub struct Inflater {
    inner: Decompress,
    ended: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("total_in", &self.inner.total_in())
            .field("total_out", &self.inner.total_out())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Inflater {
    /// Creates an inflater expecting a zlib stream (with header).
    pub fn new() -> Self {
        Inflater {
            inner: Decompress::new(true),
            ended: false,
        }
    }

    /// Makes the inflater ready for a new stream (MCCP may be restarted).
    pub fn reset(&mut self) {
        self.inner.reset(true);
        self.ended = false;
    }

    /// Compressed bytes consumed and decompressed bytes produced so far in
    /// this stream, for metrics.
    pub fn totals(&self) -> (u64, u64) {
        (self.inner.total_in(), self.inner.total_out())
    }

    /// Inflates `input`, appending at most `max_out` bytes to `out`.
    ///
    /// See [`Progress`] for what to do next. After a stream end, further
    /// calls return `StreamEnd(0)` until [`reset`](Inflater::reset).
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<Progress, MccpError> {
        if self.ended {
            return Ok(Progress::StreamEnd(0));
        }
        let mut consumed = 0;
        let mut produced = 0;
        loop {
            let budget = max_out - produced;
            if budget == 0 {
                return Ok(Progress::OutputFull(consumed));
            }
            let step = budget.min(INFLATE_STEP);
            let start = out.len();
            out.resize(start + step, 0);
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status =
                self.inner
                    .decompress(&input[consumed..], &mut out[start..], FlushDecompress::None);
            // The deltas are bounded by the slice lengths, so they fit usize.
            let n_in = (self.inner.total_in() - in_before) as usize;
            let n_out = (self.inner.total_out() - out_before) as usize;
            out.truncate(start + n_out);
            consumed += n_in;
            produced += n_out;
            match status {
                Err(e) => {
                    return Err(MccpError { msg: e.to_string() });
                }
                Ok(Status::StreamEnd) => {
                    self.ended = true;
                    return Ok(Progress::StreamEnd(consumed));
                }
                Ok(Status::Ok | Status::BufError) => {
                    if n_out == step {
                        // Output space ran out: there may be more pending.
                        continue;
                    }
                    if consumed == input.len() {
                        return Ok(Progress::NeedInput);
                    }
                    if n_in == 0 && n_out == 0 {
                        // Input left, room left, yet no progress: zlib can't
                        // make sense of it. Don't spin.
                        return Err(MccpError {
                            msg: "inflate made no progress".into(),
                        });
                    }
                }
            }
        }
    }
}

/// Deflates a stream toward a player (MCCP2 from the proxy's side), with a
/// sync flush per write so each relayed write is decodable immediately.
pub struct Deflater {
    inner: Compress,
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater")
            .field("total_in", &self.inner.total_in())
            .field("total_out", &self.inner.total_out())
            .finish()
    }
}

impl Deflater {
    /// Creates a deflater producing a zlib stream; `level` is 0-9 (higher
    /// values are clamped to 9).
    pub fn new(level: u32) -> Self {
        Deflater {
            inner: Compress::new(Compression::new(level.min(9)), true),
        }
    }

    /// Bytes taken in and compressed bytes produced so far, for metrics.
    pub fn totals(&self) -> (u64, u64) {
        (self.inner.total_in(), self.inner.total_out())
    }

    /// Compresses `input` and appends it, sync-flushed, to `out`.
    ///
    /// An empty `input` appends nothing (a flush would only add an empty
    /// block).
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        let mut consumed = 0;
        loop {
            // zlib's rule: the flush is complete once a call leaves output
            // space unused and has taken all input.
            out.reserve((input.len() - consumed) / 2 + 64);
            let before = self.inner.total_in();
            self.inner
                .compress_vec(&input[consumed..], out, FlushCompress::Sync)
                // Deflate only fails on misuse (e.g. writing after Finish);
                // `finish` takes `self`, so that can't happen here.
                .expect("deflate cannot fail before finish");
            consumed += (self.inner.total_in() - before) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                return;
            }
        }
    }

    /// Ends the zlib stream, appending the final block and checksum to
    /// `out`. The peer's inflater then sees the stream end, and whatever
    /// follows on the connection is plain telnet.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        loop {
            out.reserve(64);
            let status = self
                .inner
                .compress_vec(&[], out, FlushCompress::Finish)
                // As in `compress`: only misuse fails, and this is the one
                // and only Finish on this stream.
                .expect("deflate finish cannot fail");
            if status == Status::StreamEnd {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
