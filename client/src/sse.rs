//! A Server-Sent Events frame parser: bytes in (as they arrive, cut anywhere),
//! frames out (`id`, `event`, `data`), comments and `retry:` dropped.
//!
//! Pure: no IO, no knowledge of Conclave's events; must not depend on anything else
//! in the crate.

/// One SSE frame (a block ended by a blank line) that carried data or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
}

impl Parser {
    /// Bytes in the buffer not yet parsed (a frame being received).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let (end, skip) = block_end(&self.buffer)?;
            let block: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            if let Some(frame) = parse_block(&String::from_utf8_lossy(&block)) {
                return Some(frame);
            }
        }
    }
}

/// Where the first block ends (`\n\n`, `\r\n\r\n` or `\r\r`) and the length of the
/// separator.
fn block_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut index = 0;
    while index < buffer.len() {
        for separator in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if buffer[index..].starts_with(separator) {
                return Some((index, separator.len()));
            }
        }
        index += 1;
    }
    None
}

fn parse_block(block: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
    };
    let mut has_data = false;
    for line in block.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => {
                if has_data {
                    frame.data.push('\n');
                }
                frame.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    (has_data || frame.event.is_some()).then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cut_anywhere_come_out_whole_and_comments_are_dropped() {
        let text = "retry: 1000\n: watching from 2.0\n\nid: 2.0\nevent: kv.put\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: cluster\ndata: {}\n\n";
        for cut in 0..text.len() {
            let mut parser = Parser::default();
            let mut frames = Vec::new();
            parser.push(&text.as_bytes()[..cut]);
            frames.extend(std::iter::from_fn(|| parser.next_frame()));
            parser.push(&text.as_bytes()[cut..]);
            frames.extend(std::iter::from_fn(|| parser.next_frame()));
            assert_eq!(
                frames,
                vec![
                    Frame {
                        id: Some("2.0".into()),
                        event: Some("kv.put".into()),
                        data: "{\"a\":1}".into()
                    },
                    Frame {
                        id: None,
                        event: Some("cluster".into()),
                        data: "{}".into()
                    },
                ],
                "cut at {cut}"
            );
            assert_eq!(parser.pending(), 0);
        }
    }

    #[test]
    fn crlf_and_multi_line_data() {
        let mut parser = Parser::default();
        parser.push(b"id: 1.0\r\ndata: a\r\ndata: b\r\n\r\n");
        let frame = parser.next_frame().unwrap();
        assert_eq!(
            (frame.id.as_deref(), frame.data.as_str()),
            (Some("1.0"), "a\nb")
        );
        assert!(parser.next_frame().is_none());
    }
}
