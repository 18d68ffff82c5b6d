//! Peer-chosen strings in log lines: the one rendering both daemons use.
//!
//! A file name, device id or service name comes from the peer. Printed as
//! is, `x bytes=1 ok` would add fields to a `key=value` line, `\n` would
//! fake a whole line, U+202E would make `exe.txt` read `txt.exe`, and a
//! 1 KiB path would make every line about it 1 KiB long. [`LogSafe`] (and
//! [`log_safe`]) render such a string so that it is **one token**:
//!
//! * **escaped** as `\u{hex}` (lowercase hex, the Rust escape): whitespace
//!   of any kind (the field separator), C0/C1 controls, Unicode format
//!   characters (bidi overrides and isolates, zero-width characters, the
//!   BOM, tags: [`is_unsafe_char`]), characters that render blank without
//!   being whitespace (Hangul fillers, braille blank, variation selectors,
//!   ...), and `\`, `"` and `…` themselves: `\` so an escape in the output
//!   always is one (a name spelling `\u{20}` renders `\u{5c}u{20}`), `"` so
//!   a logfmt reader never sees a quoted value, `…` so it only ever means
//!   "cut";
//! * **bounded**: at most [`LOG_NAME_MAX`] (128) bytes of output; a longer
//!   rendering is cut at a character (never inside an escape) and ends with
//!   [`CUT_MARKER`] (`…`);
//! * **never empty**: the empty string renders `""` (a `"` in a name is
//!   escaped, so `""` can only mean empty), so `name= bytes=1` never
//!   happens.
//!
//! Every other character, `=` included, is printed unchanged, so ordinary
//! names (`hello.txt`, `node-a`, `Ünïcode.pdf`) read as they are and the
//! OS boot markers (`file received from=<id> name=<n> ...`) keep their
//! shape. Uncut renderings are reversible (the tests decode them back).
//!
//! Why 128 bytes: device ids and service names are at most 64 bytes on the
//! wire, so an ordinary one is never cut and even a fully escaped one stays
//! readable; file names (up to 255 bytes, paths up to 1024) are cut, which
//! is what keeps a line a peer triggers within a couple of hundred bytes.
//! With [`super::LogLimiter`] bounding how many lines a peer can trigger,
//! this bounds the log volume a peer can cause.

use alloc::string::String;
use core::fmt::{self, Write};

use crate::transfer::name::is_unsafe_char;

/// Most bytes a rendered name takes in a log line, [`CUT_MARKER`] included.
pub const LOG_NAME_MAX: usize = 128;

/// Ends a rendering that was cut to [`LOG_NAME_MAX`] bytes. Escaped when it
/// occurs in a name, so it never appears in a rendering otherwise.
pub const CUT_MARKER: &str = "…";

/// Characters that are neither whitespace nor format characters but show
/// as nothing or as blank space, so a reader could take them for a field
/// gap or miss them: combining grapheme joiner, Hangul fillers, Khmer
/// inherent vowels, Mongolian variation selectors and vowel separator,
/// braille blank, variation selectors, halfwidth Hangul filler.
const BLANK_CHARS: &[(u32, u32)] = &[
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
];

/// True for a character [`LogSafe`] prints as `\u{hex}` (module docs).
pub fn is_escaped_in_logs(c: char) -> bool {
    let u = u32::from(c);
    c.is_whitespace()
        || matches!(c, '\\' | '"' | '…')
        || is_unsafe_char(c)
        || BLANK_CHARS.iter().any(|&(a, b)| (a..=b).contains(&u))
}

/// Bytes `c` takes in the rendering.
fn rendered_len(c: char) -> usize {
    if is_escaped_in_logs(c) {
        // `\u{` + hex digits + `}`.
        let digits = (32 - u32::from(c).max(1).leading_zeros()).div_ceil(4) as usize;
        4 + digits
    } else {
        c.len_utf8()
    }
}

fn write_char(f: &mut impl Write, c: char) -> fmt::Result {
    if is_escaped_in_logs(c) {
        write!(f, "\\u{{{:x}}}", u32::from(c))
    } else {
        f.write_char(c)
    }
}

/// A peer-chosen string rendered for a log line (module docs): one token of
/// at most [`LOG_NAME_MAX`] bytes, no whitespace, controls, bidi, format or
/// blank characters. Formats without allocating.
#[derive(Clone, Copy, Debug)]
pub struct LogSafe<'a>(pub &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.is_empty() {
            return f.write_str("\"\"");
        }
        // First pass (stops after LOG_NAME_MAX + 1 bytes of output, so a
        // 10 000-character name costs no more than a short one): how much
        // of `s` fits, with and without room for the marker.
        let room = LOG_NAME_MAX - CUT_MARKER.len();
        let mut len = 0;
        let mut fits_with_marker = 0;
        let mut cut = false;
        for (i, c) in s.char_indices() {
            len += rendered_len(c);
            if len > LOG_NAME_MAX {
                cut = true;
                break;
            }
            if len <= room {
                fits_with_marker = i + c.len_utf8();
            }
        }
        let shown = if cut { &s[..fits_with_marker] } else { s };
        for c in shown.chars() {
            write_char(f, c)?;
        }
        if cut {
            f.write_str(CUT_MARKER)?;
        }
        Ok(())
    }
}

/// [`LogSafe`] as a `String`.
pub fn log_safe(s: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", LogSafe(s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Undoes the escapes of an uncut rendering (the test oracle for
    /// "reversible"); `None` for text no rendering can produce.
    fn decode(r: &str) -> Option<String> {
        if r == "\"\"" {
            return Some(String::new());
        }
        let mut out = String::new();
        let mut rest = r;
        while let Some(i) = rest.find('\\') {
            out.push_str(&rest[..i]);
            let esc = rest[i..].strip_prefix("\\u{")?;
            let end = esc.find('}')?;
            out.push(char::from_u32(u32::from_str_radix(&esc[..end], 16).ok()?)?);
            rest = &esc[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    #[test]
    fn node_logsafe_plain_names_are_unchanged() {
        for n in [
            "a.bin",
            "hello.txt",
            "nexus-os2vm-a-65536.bin",
            "node-a",
            "dir/sub/file.tar.gz",
            "Ünïcode-名前.pdf",
            "k=v",
            "x".repeat(LOG_NAME_MAX).as_str(),
        ] {
            assert_eq!(log_safe(n), n);
        }
    }

    /// The OS daemon's former `log_name` test: a name cannot add fields.
    #[test]
    fn node_logsafe_names_cannot_add_fields() {
        assert_eq!(log_safe("x bytes=1 ok"), "x\\u{20}bytes=1\\u{20}ok");
        assert_eq!(
            log_safe("a.bin bytes=99 ok\tfrom=evil"),
            "a.bin\\u{20}bytes=99\\u{20}ok\\u{9}from=evil"
        );
        let line = format!("file received from=a name={} bytes=1 ok", LogSafe("x ok=1"));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields,
            [
                "file",
                "received",
                "from=a",
                "name=x\\u{20}ok=1",
                "bytes=1",
                "ok"
            ]
        );
    }

    #[test]
    fn node_logsafe_hostile_inputs() {
        // Fake lines.
        assert_eq!(
            log_safe("a\nfile received ok"),
            "a\\u{a}file\\u{20}received\\u{20}ok"
        );
        assert_eq!(log_safe("a\r\n"), "a\\u{d}\\u{a}");
        assert_eq!(log_safe("a\u{2028}b\u{85}c"), "a\\u{2028}b\\u{85}c");
        // Bidi override, isolates, zero-width and BOM.
        assert_eq!(log_safe("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(log_safe("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(
            log_safe("a\u{200b}\u{200d}\u{feff}b"),
            "a\\u{200b}\\u{200d}\\u{feff}b"
        );
        // Blank look-alikes and non-ASCII spaces.
        assert_eq!(
            log_safe("a\u{3164}b\u{a0}c\u{3000}"),
            "a\\u{3164}b\\u{a0}c\\u{3000}"
        );
        // Escapes in the name cannot pass for ours; quotes cannot open a value.
        assert_eq!(log_safe("a\\u{20}b"), "a\\u{5c}u{20}b");
        assert_eq!(log_safe("\\"), "\\u{5c}");
        assert_eq!(log_safe("\"q\" x"), "\\u{22}q\\u{22}\\u{20}x");
        assert_eq!(log_safe("\0"), "\\u{0}");
        assert_eq!(log_safe("\u{1b}[31mred"), "\\u{1b}[31mred");
        // Empty is visible; a literal marker is not a cut.
        assert_eq!(log_safe(""), "\"\"");
        assert_eq!(log_safe("wait…"), "wait\\u{2026}");
    }

    #[test]
    fn node_logsafe_long_names_are_cut_with_a_marker() {
        let long = "y".repeat(10_000);
        let r = log_safe(&long);
        assert_eq!(r.len(), LOG_NAME_MAX);
        assert_eq!(r, format!("{}{CUT_MARKER}", "y".repeat(LOG_NAME_MAX - 3)));
        // One byte over the bound is cut; exactly the bound is not.
        assert!(log_safe(&"y".repeat(LOG_NAME_MAX + 1)).ends_with(CUT_MARKER));
        // Escapes are never split: 10 000 newlines give whole `\u{a}`s.
        let r = log_safe(&"\n".repeat(10_000));
        assert!(r.len() <= LOG_NAME_MAX);
        let body = r.strip_suffix(CUT_MARKER).unwrap();
        assert_eq!(body, "\\u{a}".repeat(body.len() / 5));
        // Multi-byte characters are never split either.
        let r = log_safe(&"名".repeat(100));
        assert!(r.len() <= LOG_NAME_MAX && r.ends_with(CUT_MARKER));
        assert!(r
            .strip_suffix(CUT_MARKER)
            .unwrap()
            .chars()
            .all(|c| c == '名'));
    }

    #[test]
    fn node_logsafe_rendered_len_matches_the_escape() {
        for c in [
            '\0',
            '\n',
            ' ',
            '\u{85}',
            '\u{202e}',
            '\u{feff}',
            '\u{e0020}',
            'a',
            'é',
            '名',
            '😀',
        ] {
            let mut s = String::new();
            write_char(&mut s, c).unwrap();
            assert_eq!(s.len(), rendered_len(c), "{c:?}");
        }
    }

    /// What the proptest's inputs are drawn from: plain text plus every
    /// kind of character the rendering must escape.
    fn hostile() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => any::<char>(),
            2 => proptest::sample::select(alloc::vec![
                ' ', '\n', '\r', '\t', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{2028}',
                '\u{2029}', '\u{202e}', '\u{202d}', '\u{2066}', '\u{2069}', '\u{200b}',
                '\u{200d}', '\u{feff}', '\u{3164}', '\u{2800}', '\u{fe0f}', '\\', '"', '=',
                '…', '{', '}', 'u', '\0', '\u{1b}', '\u{7f}', '\u{e0041}',
            ]),
            2 => proptest::char::range('a', 'z'),
        ];
        proptest::collection::vec(ch, 0..400).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the peer sends: the rendering is non-empty, at most
        /// LOG_NAME_MAX bytes, has no whitespace, control, format (bidi,
        /// zero-width) or blank character, uses `…` only as the final cut
        /// marker, and an uncut rendering decodes back to the input.
        #[test]
        fn node_logsafe_output_is_one_bounded_token(s in hostile()) {
            let r = log_safe(&s);
            prop_assert!(!r.is_empty());
            prop_assert!(r.len() <= LOG_NAME_MAX, "{} bytes", r.len());
            prop_assert!(r.chars().all(|c| !c.is_whitespace() && !c.is_control() && !is_unsafe_char(c)));
            // Nothing else that must be escaped, except the escapes' own `\`,
            // the marker and the empty rendering's quotes (checked below).
            prop_assert!(r.chars().all(|c| !is_escaped_in_logs(c) || matches!(c, '\\' | '…' | '"')));
            let cut = r.ends_with(CUT_MARKER);
            let body = r.strip_suffix(CUT_MARKER).unwrap_or(&r);
            prop_assert!(!body.contains('…'));
            if cut {
                // The kept part is a prefix of the input, escaped whole.
                let kept = decode(body).unwrap();
                prop_assert!(s.starts_with(&kept));
                prop_assert!(kept.len() < s.len());
            } else {
                prop_assert_eq!(decode(&r).unwrap(), s.clone());
            }
            // `"` appears only as the empty rendering.
            prop_assert!(!r.contains('"') || r == "\"\"");
            // Display and log_safe agree.
            prop_assert_eq!(LogSafe(&s).to_string(), r);
        }

        /// A plain name (nothing to escape) within the bound is printed
        /// unchanged: the boot markers keep their shape.
        #[test]
        fn node_logsafe_plain_names_pass_through(s in "[A-Za-z0-9._/=+-]{1,128}") {
            prop_assert_eq!(log_safe(&s), s);
        }
    }

    #[test]
    fn node_logsafe_renderings_are_distinct_for_distinct_short_names() {
        let names = [
            "a b",
            "a\\u{20}b",
            "a\u{a0}b",
            "a\"b",
            "a\\b",
            "",
            "\"\"",
            "a…",
            "a\\u{2026}",
        ];
        let r: Vec<String> = names.iter().map(|n| log_safe(n)).collect();
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                assert_ne!(r[i], r[j], "{:?} vs {:?}", names[i], names[j]);
            }
        }
    }
}
