//! Test fixtures shared by the modules' unit tests.

use dsoftbus::DeviceId;

/// A device id from a literal (panics on an invalid one: tests only).
pub(crate) fn id(s: &str) -> DeviceId {
    match DeviceId::new(s) {
        Ok(d) => d,
        Err(e) => panic!("{s}: {e:?}"),
    }
}
