//! Boot configuration from the PVH command line: space-separated
//! `key=value` pairs (a bare `key` means `key=`).
//!
//! Bounds: at most [`MAX_OPTIONS`] options, keys up to [`MAX_KEY`] bytes,
//! values up to [`MAX_VALUE`] bytes; anything beyond is reported and dropped,
//! never silently truncated into a different meaning.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Most options kept.
pub const MAX_OPTIONS: usize = 64;
/// Longest key.
pub const MAX_KEY: usize = 64;
/// Longest value.
pub const MAX_VALUE: usize = 256;

/// Parsed options plus what was rejected.
#[derive(Debug, Default)]
pub struct BootConfig {
    options: Vec<(String, String)>,
    /// Tokens dropped for exceeding a bound.
    pub rejected: Vec<String>,
}

impl BootConfig {
    /// Parse a command line.
    pub fn parse(cmdline: &str) -> Self {
        let mut cfg = BootConfig::default();
        for token in cmdline.split_ascii_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            if key.is_empty()
                || key.len() > MAX_KEY
                || value.len() > MAX_VALUE
                || cfg.options.len() == MAX_OPTIONS
            {
                let mut shown: String = token.chars().take(32).collect();
                if shown.len() < token.len() {
                    shown.push_str("...");
                }
                cfg.rejected.push(shown);
                continue;
            }
            cfg.options.push((key.to_string(), value.to_string()));
        }
        cfg
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Options addressed to `service` (`service.key=value`), prefix removed.
    pub fn for_service(&self, service: &str) -> Vec<(String, String)> {
        self.options
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(service)?.strip_prefix('.')?;
                Some((rest.to_string(), v.clone()))
            })
            .collect()
    }

    /// Number of options kept.
    pub fn len(&self) -> usize {
        self.options.len()
    }
}
