//! File names and relative paths: the one place where names are judged
//! (`docs/protocol/wire.md` §12.4). Shared by the core's transfer protocol
//! and the Linux CLI's inbox (`dsoftbus-cli/src/transfer/inbox.rs`
//! re-exports [`sanitize_name`] and [`candidate_name`]).
//!
//! Two directions, one rule set:
//!
//! * [`validate_path`] is what a **receiver** applies to an offered path: it
//!   accepts or refuses, never rewrites (a peer that sends an unclean name is
//!   denied, so what the user is asked about is exactly what lands).
//! * [`sanitize_path`] is what a **sender** applies to its local names to
//!   make them valid; its output always passes [`validate_path`], and a path
//!   that passes [`validate_path`] is returned unchanged.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest path component in bytes (NAME_MAX on Linux).
pub const MAX_NAME: usize = 255;
/// Longest relative path in an offer, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Unicode format characters (general category Cf: bidi embeddings,
/// overrides and isolates, zero-width joiners, the BOM, tags, ...) plus the
/// line and paragraph separators. They change how a name is displayed (e.g.
/// U+202E makes `exe.txt` read `txt.exe`) and never belong in a file name.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// True for C0/C1 controls (Cc) and the format characters above.
pub fn is_unsafe_char(c: char) -> bool {
    let u = u32::from(c);
    c.is_control() || FORMAT_CHARS.iter().any(|&(a, b)| (a..=b).contains(&u))
}

/// Why an offered path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty, or longer than [`MAX_PATH_LEN`] bytes.
    Length,
    /// Starts with `/` (absolute), or has an empty component (`a//b`, `a/`).
    EmptyComponent,
    /// A `.` or `..` component.
    DotComponent,
    /// A component longer than [`MAX_NAME`] bytes.
    ComponentTooLong,
    /// A control, bidi or other format character, or a backslash.
    UnsafeChar,
    /// A component with leading or trailing whitespace, or a first component
    /// starting with `.` (nothing lands hidden at the top of an inbox).
    Untidy,
}

impl core::fmt::Display for NameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NameError::Length => "path empty or too long",
            NameError::EmptyComponent => "absolute path or empty component",
            NameError::DotComponent => "`.` or `..` component",
            NameError::ComponentTooLong => "component longer than 255 bytes",
            NameError::UnsafeChar => "control, bidi or format character, or backslash",
            NameError::Untidy => "leading/trailing whitespace or hidden top-level name",
        })
    }
}

/// Checks one offered relative path (`/`-separated UTF-8). Total; refuses
/// traversal (`..`, absolute paths, empty components), control, bidi and
/// format characters, backslashes, components over NAME_MAX.
pub fn validate_path(path: &str) -> Result<(), NameError> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(NameError::Length);
    }
    for (i, comp) in path.split('/').enumerate() {
        if comp.is_empty() {
            return Err(NameError::EmptyComponent);
        }
        if comp == "." || comp == ".." {
            return Err(NameError::DotComponent);
        }
        if comp.len() > MAX_NAME {
            return Err(NameError::ComponentTooLong);
        }
        if comp.chars().any(|c| is_unsafe_char(c) || c == '\\') {
            return Err(NameError::UnsafeChar);
        }
        let ws = |c: Option<char>| c.is_some_and(char::is_whitespace);
        if ws(comp.chars().next()) || ws(comp.chars().next_back()) {
            return Err(NameError::Untidy);
        }
        if i == 0 && comp.starts_with('.') {
            return Err(NameError::Untidy);
        }
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cleans one component: unsafe characters and backslashes dropped,
/// whitespace trimmed, cut to [`MAX_NAME`] bytes (then trimmed again).
/// `top` also strips leading dots. `None` if nothing (or `.`/`..`) is left.
fn clean_component(comp: &str, top: bool) -> Option<String> {
    let kept: String = comp
        .chars()
        .filter(|c| !is_unsafe_char(*c) && *c != '\\')
        .collect();
    let mut s: &str = kept.trim();
    if top {
        // " .bashrc" must not become a hidden ".bashrc": strip dots and
        // spaces together.
        s = s.trim_start_matches(|c: char| c == '.' || c.is_whitespace());
    }
    let s = cut(s, MAX_NAME).trim_end();
    if s.is_empty() || s == "." || s == ".." {
        return None;
    }
    Some(String::from(s))
}

/// Makes a local relative path valid for an offer (the sender's side):
/// splits on `/` and `\`, drops empty, `.` and `..` components, cleans each
/// component (see [`validate_path`] for the rules). `None` if nothing is
/// left or the result is longer than [`MAX_PATH_LEN`].
pub fn sanitize_path(path: &str) -> Option<String> {
    let mut out = String::new();
    for comp in path.split(['/', '\\']) {
        if let Some(c) = clean_component(comp, out.is_empty()) {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&c);
        }
    }
    if out.is_empty() || out.len() > MAX_PATH_LEN {
        return None;
    }
    Some(out)
}

/// Makes an offered single-file name safe to store (the CLI's one-file
/// transfer): its last path component, no control, bidi or other format
/// characters, no leading dot, at most 255 bytes. `None` if nothing is left.
pub fn sanitize_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !is_unsafe_char(*c))
        .collect::<String>()
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end()
        .into();
    if clean.is_empty() {
        return None;
    }
    Some(String::from(cut(&clean, MAX_NAME)))
}

/// The `i`-th candidate for `name`: `name`, then `name.1`, `name.2`, … with
/// the stem shortened (on a character boundary) so the result never exceeds
/// [`MAX_NAME`] bytes (NAME_MAX on Linux).
pub fn candidate_name(name: &str, i: u32) -> String {
    let suffix = if i == 0 {
        String::new()
    } else {
        format!(".{i}")
    };
    format!(
        "{}{suffix}",
        cut(name, MAX_NAME.saturating_sub(suffix.len()))
    )
}

/// Makes the paths of one offer distinct (the sender's side). Each item is
/// (valid path, is a directory). A path that collides with an earlier one —
/// equal, e.g. two names that became equal when cut to NAME_MAX, or a file
/// that another path would need as its directory — gets its last component
/// renamed with [`candidate_name`] (`name.1`, ...). `None` if an input path
/// is invalid or no free candidate was found within 1000 tries.
pub fn dedup_paths(paths: &[(String, bool)]) -> Option<Vec<String>> {
    let mut out: Vec<(String, bool)> = Vec::with_capacity(paths.len());
    for (p, dir) in paths {
        validate_path(p).ok()?;
        let (parent, base) = match p.rfind('/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => ("", p.as_str()),
        };
        let mut found = None;
        for i in 0..1000 {
            let cand = format!("{parent}{}", candidate_name(base, i));
            if validate_path(&cand).is_ok()
                && !out.iter().any(|(o, od)| conflicts(o, *od, &cand, *dir))
            {
                found = Some(cand);
                break;
            }
        }
        out.push((found?, *dir));
    }
    Some(out.into_iter().map(|(p, _)| p).collect())
}

/// True if two entries of one offer cannot both be stored: the same path,
/// or a **file** that the other path needs as a directory (`a` and `a/b`
/// with `a` a file). A directory `a` and `a/b` do not conflict.
pub fn conflicts(a: &str, a_dir: bool, b: &str, b_dir: bool) -> bool {
    let under = |parent: &str, child: &str| {
        child.len() > parent.len()
            && child.starts_with(parent)
            && child.as_bytes().get(parent.len()) == Some(&b'/')
    };
    a == b || (!a_dir && under(a, b)) || (!b_dir && under(b, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule() {
        assert_eq!(validate_path("a/b.txt"), Ok(()));
        assert_eq!(validate_path(".a/b"), Err(NameError::Untidy));
        assert_eq!(
            validate_path("a/.b"),
            Ok(()),
            "hidden below the top is fine"
        );
        assert_eq!(validate_path(""), Err(NameError::Length));
        assert_eq!(validate_path(&"a/".repeat(600)), Err(NameError::Length));
        assert_eq!(validate_path("/a"), Err(NameError::EmptyComponent));
        assert_eq!(validate_path("a//b"), Err(NameError::EmptyComponent));
        assert_eq!(validate_path("a/"), Err(NameError::EmptyComponent));
        assert_eq!(validate_path(".."), Err(NameError::DotComponent));
        assert_eq!(validate_path("a/./b"), Err(NameError::DotComponent));
        assert_eq!(
            validate_path(&"x".repeat(256)),
            Err(NameError::ComponentTooLong)
        );
        assert_eq!(validate_path(&"x".repeat(255)), Ok(()));
        assert_eq!(validate_path("a\\b"), Err(NameError::UnsafeChar));
        assert_eq!(validate_path("a\u{202e}b"), Err(NameError::UnsafeChar));
        assert_eq!(validate_path("a\u{9f}b"), Err(NameError::UnsafeChar));
        assert_eq!(validate_path("a /b"), Err(NameError::Untidy));
        assert_eq!(validate_path("a/\u{3000}b"), Err(NameError::Untidy));
        assert_eq!(validate_path("résumé/日本.txt"), Ok(()));
    }

    #[test]
    fn sanitize_matches_the_cli_rules() {
        assert_eq!(sanitize_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize_name(" .bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize_path(" .bashrc/.x").as_deref(), Some("bashrc/.x"));
        assert_eq!(sanitize_path("./a/../b").as_deref(), Some("a/b"));
        assert_eq!(sanitize_path("a/ . /b").as_deref(), Some("a/b"));
        assert_eq!(sanitize_path("//").as_deref(), None);
        assert_eq!(candidate_name("f.txt", 2), "f.txt.2");
        let c = candidate_name(&"é".repeat(128), 1);
        assert!(c.len() <= MAX_NAME && c.ends_with(".1"));
    }

    #[test]
    fn conflicts_rule() {
        assert!(conflicts("a", false, "a", true));
        assert!(conflicts("a", false, "a/b", false));
        assert!(!conflicts("a", true, "a/b", false));
        assert!(!conflicts("a", false, "ab/c", false));
        assert!(conflicts("a/b/c", true, "a/b", false));
    }
}
