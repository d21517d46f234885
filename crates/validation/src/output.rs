//! Captured VM output: capped at a byte limit while the stream is drained to its end (so the
//! exit status still arrives), decoded lossily. The bytes are untrusted data; they are only
//! ever compared, never interpreted.

use std::fmt;

/// Default cap on each of stdout and stderr of one command: 64 KiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = cks_ssh::DEFAULT_OUTPUT_LIMIT;

/// Output of one stream, at most `limit` bytes of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The kept bytes, decoded as UTF-8 (invalid sequences become U+FFFD).
    pub text: String,
    /// How many bytes the stream produced in total.
    pub total_bytes: u64,
    /// True when bytes beyond the limit were dropped.
    pub truncated: bool,
}

impl Captured {
    /// Captures `text` whole, for fakes and tests.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            total_bytes: text.len() as u64,
            text,
            truncated: false,
        }
    }

    /// The text with a marker when it was truncated, as shown to students.
    pub fn display(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.truncated {
            write!(
                f,
                "\n[output truncated: {} of {} bytes kept]",
                self.text.len(),
                self.total_bytes
            )?;
        }
        Ok(())
    }
}

/// Collects a stream's chunks up to a limit.
#[derive(Debug)]
pub(crate) struct OutputBuffer {
    limit: usize,
    kept: Vec<u8>,
    total: u64,
}

impl OutputBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: Vec::new(),
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    pub(crate) fn finish(self) -> Captured {
        Captured {
            truncated: self.total > self.kept.len() as u64,
            text: String::from_utf8_lossy(&self.kept).into_owned(),
            total_bytes: self.total,
        }
    }
}

/// Shortens `text` to at most `max` bytes on a character boundary, with a marker.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[shortened: {} of {} bytes shown]",
        &text[..end],
        end,
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_beyond_the_limit_is_dropped_and_marked() {
        let mut b = OutputBuffer::new(5);
        b.push(b"abc");
        b.push(b"defgh");
        b.push(b"ij");
        let c = b.finish();
        assert_eq!(c.text, "abcde");
        assert_eq!(c.total_bytes, 10);
        assert!(c.truncated);
        assert_eq!(c.display(), "abcde\n[output truncated: 5 of 10 bytes kept]");
    }

    #[test]
    fn output_within_the_limit_is_kept_whole_and_invalid_utf8_is_replaced() {
        let mut b = OutputBuffer::new(16);
        b.push(b"ok\xff\n");
        let c = b.finish();
        assert_eq!(c.text, "ok\u{fffd}\n");
        assert!(!c.truncated);
        assert_eq!(c.display(), c.text);
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "h\n[shortened: 1 of 6 bytes shown]");
    }
}
