//! The user programs embedded at build time (build.rs builds them with a
//! nested cargo and generates this table).

include!(concat!(env!("OUT_DIR"), "/images.rs"));

/// The ELF image named `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    IMAGES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
