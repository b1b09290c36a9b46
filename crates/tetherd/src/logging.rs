//! Structured logs through `tracing`, as text or JSON lines.
//!
//! Much of what gets logged comes from peers: channel names, token
//! headers, client names, request paths, close reasons. A log line is one
//! event, so no value may start another line or pose as another field. The
//! JSON format escapes by construction; the text format writes each field
//! through [`EscapedFields`], which quotes and escapes any value that is
//! not a plain word, and escapes control characters in the message.

use std::{
    fmt::{self, Write as _},
    io::IsTerminal,
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    EnvFilter,
    field::{MakeVisitor, VisitFmt, VisitOutput},
    fmt::{fmt as subscriber, format::Writer},
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info`.
pub(crate) fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = subscriber()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        Format::Text => builder.fmt_fields(EscapedFields).init(),
        Format::Json => builder.json().init(),
    }
}

/// Formats a text line's fields as `name=value`, separated by spaces, the
/// message first and bare. A value that is not a plain word (empty, or
/// holding whitespace, quotes, `=`, backslashes or control characters) is
/// written quoted with those escaped, so `channel="a\nb user=x"` stays one
/// field of one line.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'w> MakeVisitor<Writer<'w>> for EscapedFields {
    type Visitor = FieldWriter<'w>;

    fn make_visitor(&self, target: Writer<'w>) -> Self::Visitor {
        FieldWriter {
            writer: target,
            empty: true,
            result: Ok(()),
        }
    }
}

/// Writes the fields of one event or span for [`EscapedFields`].
pub(crate) struct FieldWriter<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = self.try_write(field, value);
    }

    fn try_write(&mut self, field: &Field, value: &str) -> fmt::Result {
        if !self.empty {
            self.writer.write_char(' ')?;
        }
        self.empty = false;
        if field.name() == "message" {
            return write_escaped(&mut self.writer, value);
        }
        write!(self.writer, "{}=", field.name())?;
        if is_plain(value) {
            self.writer.write_str(value)
        } else {
            self.writer.write_char('"')?;
            write_escaped(&mut self.writer, value)?;
            self.writer.write_char('"')
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formatted into a buffer kept per thread, to be checked before it
        // is written: a log line costs no allocation once warm.
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        TEXT.with(|text| match text.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                if write!(text, "{value:?}").is_err() {
                    self.result = Err(fmt::Error);
                    return;
                }
                self.write(field, &text);
            }
            // A value whose Debug logs (re-entered): no shared buffer.
            Err(_) => self.write(field, &format!("{value:?}")),
        });
    }
}

impl VisitOutput<fmt::Result> for FieldWriter<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FieldWriter<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A value that can stand unquoted in a `name=value` list.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

/// Writes `text` with quotes, backslashes and every character that could
/// break a line or move the cursor (C0/C1 controls, DEL, the Unicode line
/// and paragraph separators) escaped.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                write!(out, "\\u{{{:x}}}", u32::from(c))?;
            }
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs in `format`, one string per line.
    fn lines(format: Format, emit: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = subscriber()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        match format {
            Format::Text => {
                tracing::subscriber::with_default(builder.fmt_fields(EscapedFields).finish(), emit);
            }
            Format::Json => tracing::subscriber::with_default(builder.json().finish(), emit),
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Values a peer could send: newlines of every kind, a forged field,
    /// a terminal escape, quotes and backslashes.
    const HOSTILE: [&str; 6] = [
        "HS256\n2030-01-01T00:00:00Z  INFO tetherd: admin logged in",
        "a\rb",
        "x user=admin",
        "\u{1b}[2J\u{1b}[H",
        "line\u{2028}separator\u{85}next",
        "quote\" and \\ backslash",
    ];

    #[test]
    fn a_hostile_value_stays_one_field_of_one_line() {
        for value in HOSTILE {
            let error = io::Error::other(value);
            let text = lines(Format::Text, || {
                tracing::info!(channel = %value, user = value, %error, "refused");
            });
            assert_eq!(text.len(), 1, "{value:?} gave {text:#?}");
            let line = &text[0];
            assert!(
                !line.contains('\u{1b}') && !line.contains('\u{2028}'),
                "{line}"
            );
            assert!(!line.contains(" user=admin "), "a forged field: {line}");
            let fields = line.split(" channel=").nth(1).expect("the channel field");
            assert!(fields.starts_with('"'), "quoted: {line}");

            let json = lines(Format::Json, || {
                tracing::info!(channel = %value, user = value, %error, "refused");
            });
            assert_eq!(json.len(), 1, "{value:?} gave {json:#?}");
            let event: serde_json::Value = serde_json::from_str(&json[0]).expect("JSON");
            assert_eq!(event["fields"]["channel"], value);

            // A message formatted from a value (an error's text) cannot
            // break the line either.
            let text = lines(Format::Text, || tracing::warn!("{error}"));
            assert_eq!(text.len(), 1, "{value:?} gave {text:#?}");
        }
    }

    #[test]
    fn plain_values_stay_unquoted() {
        let text = lines(Format::Text, || {
            tracing::info!(peer = %"127.0.0.1:5000", code = 3005, client = "", "session ended");
        });
        assert_eq!(text.len(), 1);
        assert!(
            text[0].ends_with("session ended peer=127.0.0.1:5000 code=3005 client=\"\""),
            "{}",
            text[0]
        );
    }

    #[test]
    fn escapes_are_reversible() {
        let mut out = String::new();
        write_escaped(&mut out, "a\"b\\c\nd\u{7}e\u{2029}").unwrap();
        assert_eq!(out, r#"a\"b\\c\nd\u{7}e\u{2029}"#);
    }
}
