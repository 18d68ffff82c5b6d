//! The file hash of a transfer, per [`Version`]: SHA-256 (v1) or BLAKE3-256
//! (v2, feature `transfer-v2`). One type for every place that hashes file
//! bytes (the receiver, and a caller with `caller_hashes` or building an
//! offer), so the choice of algorithm is made once, by the version.

use sha2::{Digest, Sha256};

use super::wire::Version;

/// An incremental hash of one file's bytes under a transfer version.
#[derive(Clone, Debug)]
pub struct FileHasher(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Sha256(Sha256),
    /// Boxed: the BLAKE3 state (about 1.9 KB) is much larger than SHA-256's.
    #[cfg(feature = "transfer-v2")]
    Blake3(alloc::boxed::Box<blake3::Hasher>),
}

impl FileHasher {
    /// A hasher for `version`'s hash; `None` if this build does not have it
    /// ([`Version::supported`]).
    pub fn new(version: Version) -> Option<FileHasher> {
        match version {
            Version::V1 => Some(FileHasher(Inner::Sha256(Sha256::new()))),
            #[cfg(feature = "transfer-v2")]
            Version::V2 => Some(FileHasher(Inner::Blake3(alloc::boxed::Box::default()))),
            #[cfg(not(feature = "transfer-v2"))]
            Version::V2 => None,
        }
    }

    /// Hashes the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Inner::Sha256(h) => h.update(bytes),
            #[cfg(feature = "transfer-v2")]
            Inner::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The digest of every byte given.
    pub fn finalize(self) -> [u8; 32] {
        match self.0 {
            Inner::Sha256(h) => h.finalize().into(),
            #[cfg(feature = "transfer-v2")]
            Inner::Blake3(h) => h.finalize().into(),
        }
    }

    /// The digest of `bytes` under `version`; `None` as for [`FileHasher::new`].
    pub fn digest(version: Version, bytes: &[u8]) -> Option<[u8; 32]> {
        let mut h = FileHasher::new(version)?;
        h.update(bytes);
        Some(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::new();
        for b in d {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Published values: FIPS 180-2 for SHA-256, the BLAKE3 reference
    /// (`b3sum` of `abc`) for BLAKE3.
    #[test]
    fn known_answers_and_pieces_give_the_whole() {
        let v1 = FileHasher::digest(Version::V1, b"abc").map(hex);
        assert_eq!(
            v1.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        let v2 = FileHasher::digest(Version::V2, b"abc").map(hex);
        if Version::V2.supported() {
            assert_eq!(
                v2.as_deref(),
                Some("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
            );
        } else {
            assert_eq!(v2, None);
        }
        let body: alloc::vec::Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for v in [Version::V1, Version::V2]
            .into_iter()
            .filter(|v| v.supported())
        {
            let mut h = FileHasher::new(v).unwrap();
            for piece in body.chunks(65_502) {
                h.update(piece);
            }
            assert_eq!(Some(h.finalize()), FileHasher::digest(v, &body), "{v:?}");
        }
    }
}
