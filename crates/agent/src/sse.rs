//! An incremental parser of server-sent events (the `text/event-stream`
//! format of the HTML Living Standard), fed with body chunks as they
//! arrive.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// Whether the last chunk ended in `\r`, so a leading `\n` of the
    /// next chunk belongs to that line ending.
    after_cr: bool,
    event: String,
    data: Vec<String>,
    has_data: bool,
}

impl Parser {
    /// Feeds the next chunk and returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut start = 0;
        if self.after_cr && chunk.first() == Some(&b'\n') {
            start = 1;
        }
        self.after_cr = false;
        let mut index = start;
        while index < chunk.len() {
            let byte = chunk[index];
            if byte == b'\n' || byte == b'\r' {
                self.pending.extend_from_slice(&chunk[start..index]);
                let line = std::mem::take(&mut self.pending);
                if let Some(event) = self.line(&line) {
                    events.push(event);
                }
                if byte == b'\r' {
                    if chunk.get(index + 1) == Some(&b'\n') {
                        index += 1;
                    } else if index + 1 == chunk.len() {
                        self.after_cr = true;
                    }
                }
                start = index + 1;
            }
            index += 1;
        }
        self.pending
            .extend_from_slice(&chunk[start.min(chunk.len())..]);
        events
    }

    /// Processes one complete line; a blank line dispatches the event.
    fn line(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return None;
            }
            let event = Event {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data).join("\n"),
            };
            self.has_data = false;
            return Some(event);
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push(value.to_string());
                self.has_data = true;
            }
            // `id` and `retry` steer browser reconnects, which no caller
            // here performs.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::default();
        chunks.iter().flat_map(|chunk| parser.feed(chunk)).collect()
    }

    fn event(name: &str, data: &str) -> Event {
        Event {
            event: name.to_string(),
            data: data.to_string(),
        }
    }

    #[test]
    fn events_split_across_chunks() {
        let events = parse_all(&[
            b"event: a\nda",
            b"ta: {\"x\":1}\n",
            b"\nevent: b\ndata: 2\n\n",
        ]);
        assert_eq!(events, vec![event("a", "{\"x\":1}"), event("b", "2")]);
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let events = parse_all(&[b"data: one\r", b"\n\r\ndata: two\r\rdata: three\n\n"]);
        assert_eq!(
            events,
            vec![event("", "one"), event("", "two"), event("", "three")]
        );
    }

    #[test]
    fn multiline_data_and_comments() {
        let events = parse_all(&[b": keep-alive\n\ndata: a\ndata:b\nid: 7\n\n"]);
        assert_eq!(events, vec![event("", "a\nb")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        let events = parse_all(&[b"event: ping\n\ndata: x\n\n"]);
        assert_eq!(events, vec![event("", "x")]);
    }

    #[test]
    fn unterminated_event_stays_pending() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"data: partial\n").is_empty());
        assert_eq!(parser.feed(b"\n"), vec![event("", "partial")]);
    }
}
