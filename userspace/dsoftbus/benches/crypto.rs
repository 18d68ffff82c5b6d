//! Crypto backends on this CPU, same run: which ChaCha20-Poly1305 the session
//! should use on hosts (`aead/*`).
//!
//! `aead/{backend}_{seal,open}_{16,64}k`: ChaCha20-Poly1305 (RFC 8439, the
//! Noise `ChaChaPoly` transport cipher: 96-bit nonce, empty AD, 16-byte tag)
//! over one record, **in place**, with every backend that builds here without
//! extra system packages:
//!
//! - `ring` 0.17 (BoringSSL-derived assembly; the host backend until now),
//! - `aws-lc-rs` 1 (AWS-LC, BoringSSL-derived C + assembly, built by `cc`),
//! - `openssl` 0.10 against the system libssl (Debian 12: OpenSSL 3.0),
//! - RustCrypto `chacha20poly1305` 0.10 (the `no_std` OS backend; chacha20 0.9
//!   picks AVX2 at run time, it has no AVX-512 backend),
//! - RustCrypto `chacha20poly1305` 0.11 (chacha20 0.10: AVX2 at run time,
//!   AVX-512 only when built with `RUSTFLAGS='--cfg chacha20_avx512'`).
//!
//! Open measures decryption + tag check of a valid record; the record is
//! copied into the work buffer in criterion's untimed setup
//! (`iter_batched_ref`), so the copy is not counted.

mod common;

use std::hint::black_box;

use common::*;
use criterion::{BatchSize, BenchmarkGroup, Throughput};

const KEY: [u8; 32] = [7; 32];
const SIZES: [(usize, &str); 2] = [(16 * 1024, "16k"), (64 * 1024, "64k")];
const TAG: usize = 16;

/// One backend: seal `buf` in place with the 64-bit counter `n` as nonce,
/// returning the tag; open `ct ‖ tag` in place.
trait Aead {
    const NAME: &'static str;
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG];
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool;
}

fn nonce(n: u64) -> [u8; 12] {
    let mut x = [0u8; 12];
    x[4..].copy_from_slice(&n.to_le_bytes());
    x
}

struct Ring(ring::aead::LessSafeKey);
impl Aead for Ring {
    const NAME: &'static str = "ring";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        use ring::aead::{Aad, Nonce};
        let t = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(n)), Aad::empty(), buf)
            .expect("seal");
        t.as_ref().try_into().expect("tag")
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        use ring::aead::{Aad, Nonce};
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce(n)), Aad::empty(), msg)
            .is_ok()
    }
}

struct AwsLc(aws_lc_rs::aead::LessSafeKey);
impl Aead for AwsLc {
    const NAME: &'static str = "aws_lc";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        use aws_lc_rs::aead::{Aad, Nonce};
        let t = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(n)), Aad::empty(), buf)
            .expect("seal");
        t.as_ref().try_into().expect("tag")
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce(n)), Aad::empty(), msg)
            .is_ok()
    }
}

struct OpenSsl(openssl::cipher_ctx::CipherCtx);
impl Aead for OpenSsl {
    const NAME: &'static str = "openssl";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        let c = &mut self.0;
        c.encrypt_init(None, None, Some(&nonce(n))).expect("init");
        let len = buf.len();
        c.cipher_update_inplace(buf, len).expect("update");
        c.cipher_final(&mut []).expect("final");
        let mut tag = [0u8; TAG];
        c.tag(&mut tag).expect("tag");
        tag
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        let c = &mut self.0;
        let (ct, tag) = msg.split_at_mut(msg.len() - TAG);
        c.decrypt_init(None, None, Some(&nonce(n))).expect("init");
        c.set_tag(tag).expect("tag");
        let len = ct.len();
        c.cipher_update_inplace(ct, len).expect("update");
        c.cipher_final(&mut []).is_ok()
    }
}

fn openssl_key() -> OpenSsl {
    let mut c = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
    c.encrypt_init(
        Some(openssl::cipher::Cipher::chacha20_poly1305()),
        Some(&KEY),
        None,
    )
    .expect("key");
    OpenSsl(c)
}

fn openssl_dec_key() -> OpenSsl {
    let mut c = openssl::cipher_ctx::CipherCtx::new().expect("ctx");
    c.decrypt_init(
        Some(openssl::cipher::Cipher::chacha20_poly1305()),
        Some(&KEY),
        None,
    )
    .expect("key");
    OpenSsl(c)
}

struct RustCrypto010(chacha20poly1305::ChaCha20Poly1305);
impl Aead for RustCrypto010 {
    const NAME: &'static str = "rustcrypto_0_10";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        use chacha20poly1305::AeadInPlace;
        self.0
            .encrypt_in_place_detached(&nonce(n).into(), &[], buf)
            .expect("seal")
            .into()
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        use chacha20poly1305::AeadInPlace;
        let (ct, tag) = msg.split_at_mut(msg.len() - TAG);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.0
            .decrypt_in_place_detached(&nonce(n).into(), &[], ct, &tag)
            .is_ok()
    }
}

struct RustCrypto011(chacha20poly1305_011::ChaCha20Poly1305);
impl Aead for RustCrypto011 {
    const NAME: &'static str = "rustcrypto_0_11";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        use chacha20poly1305_011::AeadInOut;
        self.0
            .encrypt_inout_detached(&nonce(n).into(), &[], buf.into())
            .expect("seal")
            .into()
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        use chacha20poly1305_011::AeadInOut;
        let (ct, tag) = msg.split_at_mut(msg.len() - TAG);
        let tag: [u8; TAG] = (&*tag).try_into().expect("tag");
        self.0
            .decrypt_inout_detached(&nonce(n).into(), &[], ct.into(), &tag.into())
            .is_ok()
    }
}

fn bench_backend<A: Aead>(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, mut k: A) {
    for (size, label) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        let mut n = 0u64;
        g.bench_function(format!("{}_seal_{label}", A::NAME), |b| {
            b.iter(|| {
                n += 1;
                black_box(k.seal(n, black_box(&mut buf)))
            })
        });
        // A valid record under nonce 0, opened again and again.
        let mut rec = vec![0x5au8; size];
        let tag = k.seal(0, &mut rec);
        rec.extend_from_slice(&tag);
        g.bench_function(format!("{}_open_{label}", A::NAME), |b| {
            b.iter_batched_ref(
                || rec.clone(),
                |m| assert!(k.open(0, black_box(m))),
                BatchSize::SmallInput,
            )
        });
    }
}

/// The decrypting side of OpenSSL needs its own context (a CipherCtx is
/// initialised for one direction); seal with the encrypting one, open with
/// the other.
struct OpenSslPair(OpenSsl, OpenSsl);
impl Aead for OpenSslPair {
    const NAME: &'static str = "openssl";
    fn seal(&mut self, n: u64, buf: &mut [u8]) -> [u8; TAG] {
        self.0.seal(n, buf)
    }
    fn open(&mut self, n: u64, msg: &mut [u8]) -> bool {
        self.1.open(n, msg)
    }
}

fn aead_group(c: &mut criterion::Criterion) {
    let mut g = c.benchmark_group("aead");
    g.sample_size(30);
    bench_backend(
        &mut g,
        Ring(ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).expect("key"),
        )),
    );
    bench_backend(
        &mut g,
        AwsLc(aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &KEY)
                .expect("key"),
        )),
    );
    bench_backend(&mut g, OpenSslPair(openssl_key(), openssl_dec_key()));
    {
        use chacha20poly1305::KeyInit;
        bench_backend(
            &mut g,
            RustCrypto010(chacha20poly1305::ChaCha20Poly1305::new(&KEY.into())),
        );
    }
    {
        use chacha20poly1305_011::KeyInit;
        bench_backend(
            &mut g,
            RustCrypto011(chacha20poly1305_011::ChaCha20Poly1305::new(&KEY.into())),
        );
    }
    g.finish();
}

/// Cross-check: every backend produces the same record (the wire cipher is
/// fixed; a backend that disagrees must never be used).
fn agree() {
    let mut outs: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut one = |name, f: &mut dyn FnMut(&mut [u8]) -> [u8; TAG]| {
        let mut b: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let t = f(&mut b);
        b.extend_from_slice(&t);
        outs.push((name, b));
    };
    let mut r = Ring(ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).expect("key"),
    ));
    one("ring", &mut |b| r.seal(3, b));
    let mut a = AwsLc(aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &KEY).expect("key"),
    ));
    one("aws-lc", &mut |b| a.seal(3, b));
    let mut o = openssl_key();
    one("openssl", &mut |b| o.seal(3, b));
    let mut rc = {
        use chacha20poly1305::KeyInit;
        RustCrypto010(chacha20poly1305::ChaCha20Poly1305::new(&KEY.into()))
    };
    one("rustcrypto 0.10", &mut |b| rc.seal(3, b));
    let mut rc11 = {
        use chacha20poly1305_011::KeyInit;
        RustCrypto011(chacha20poly1305_011::ChaCha20Poly1305::new(&KEY.into()))
    };
    one("rustcrypto 0.11", &mut |b| rc11.seal(3, b));
    for (name, o) in &outs[1..] {
        assert_eq!(o, &outs[0].1, "{name} disagrees with ring");
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime on a valid timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

const ROUNDS: usize = 15;
const BACKENDS: [&str; 5] = [
    "ring 0.17",
    "aws-lc-rs",
    "OpenSSL (system libssl)",
    "RustCrypto 0.10",
    "RustCrypto 0.11",
];

/// Bytes per CPU second of `records` seals of `size` bytes.
fn seal_rate<A: Aead>(k: &mut A, size: usize, records: usize) -> f64 {
    let mut buf = vec![0x5au8; size];
    let t0 = thread_cpu();
    for i in 0..records {
        black_box(k.seal(i as u64 + 1, black_box(&mut buf)));
    }
    size as f64 * records as f64 / (thread_cpu() - t0)
}

fn one_rate<A: Aead>(k: &mut A, open: bool) -> f64 {
    let (size, records) = (64 * 1024, 128);
    if open {
        open_rate(k, size, records)
    } else {
        seal_rate(k, size, records)
    }
}

/// Bytes per CPU second of opening `records` valid records (each a fresh
/// copy of one sealed record: the copy is timed separately and subtracted).
fn open_rate<A: Aead>(k: &mut A, size: usize, records: usize) -> f64 {
    let mut rec = vec![0x5au8; size];
    let tag = k.seal(0, &mut rec);
    rec.extend_from_slice(&tag);
    let mut work = rec.clone();
    let t0 = thread_cpu();
    for _ in 0..records {
        work.copy_from_slice(black_box(&rec));
        black_box(&mut work);
    }
    let copy = thread_cpu() - t0;
    let t0 = thread_cpu();
    for _ in 0..records {
        work.copy_from_slice(black_box(&rec));
        assert!(k.open(0, black_box(&mut work)));
    }
    let t = (thread_cpu() - t0 - copy).max(1e-9);
    size as f64 * records as f64 / t
}

/// Paired phase: every round runs every backend once (seal and open, 64 KiB
/// records, 8 MiB each), CPU time of this thread; one ratio to ring per
/// round. On a shared machine this is the figure to quote.
fn paired_rows() {
    let mut keys = (
        Ring(ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).expect("key"),
        )),
        AwsLc(aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &KEY)
                .expect("key"),
        )),
        OpenSslPair(openssl_key(), openssl_dec_key()),
        {
            use chacha20poly1305::KeyInit;
            RustCrypto010(chacha20poly1305::ChaCha20Poly1305::new(&KEY.into()))
        },
        {
            use chacha20poly1305_011::KeyInit;
            RustCrypto011(chacha20poly1305_011::ChaCha20Poly1305::new(&KEY.into()))
        },
    );
    for open in [false, true] {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); BACKENDS.len()];
        for _ in 0..=ROUNDS {
            let r = [
                one_rate(&mut keys.0, open),
                one_rate(&mut keys.1, open),
                one_rate(&mut keys.2, open),
                one_rate(&mut keys.3, open),
                one_rate(&mut keys.4, open),
            ];
            for (v, x) in rates.iter_mut().zip(r) {
                v.push(x);
            }
        }
        // Round 0 is a warm-up.
        for v in rates.iter_mut() {
            v.remove(0);
        }
        let op = if open { "open" } else { "seal" };
        let ring = rates[0].clone();
        for (i, name) in BACKENDS.iter().enumerate() {
            let mut ratio: Vec<f64> = rates[i].iter().zip(&ring).map(|(a, b)| a / b).collect();
            let lo = ratio.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratio.iter().copied().fold(0.0, f64::max);
            let r = median(&mut ratio);
            let mut mine = rates[i].clone();
            let mut base = ring.clone();
            row(
                &format!("AEAD {op}, 64 KiB in place, CPU-normalised ({name})"),
                &format!("{:.0} MB/CPU-s", median(&mut mine) / 1e6),
                &format!("{:.0} MB/CPU-s ring", median(&mut base) / 1e6),
                &format!("{r:.2}x (rounds {lo:.2}-{hi:.2})"),
                "fastest backend on hosts",
                None,
            );
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

const HASH_SIZES: [(usize, &str); 2] = [(1 << 20, "1m"), (64 << 20, "64m")];

/// File hash candidates, one thread each: SHA-256 (the wire's, §12) from
/// `sha2` 0.10 (SHA-NI picked at run time; its `asm` feature only replaces
/// the fallback without SHA-NI), OpenSSL and aws-lc, against BLAKE3
/// (`blake3` 1, `update`: one thread, SIMD up to AVX-512 picked at run time).
fn hash_group(c: &mut criterion::Criterion) {
    let mut g = c.benchmark_group("hash");
    g.sample_size(10);
    for (size, label) in HASH_SIZES {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("sha256_sha2_{label}"), |b| {
            b.iter(|| {
                use sha2::Digest;
                black_box(sha2::Sha256::digest(black_box(&data)))
            })
        });
        g.bench_function(format!("sha256_openssl_{label}"), |b| {
            b.iter(|| black_box(openssl::sha::sha256(black_box(&data))))
        });
        g.bench_function(format!("sha256_aws_lc_{label}"), |b| {
            b.iter(|| {
                black_box(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    black_box(&data),
                ))
            })
        });
        g.bench_function(format!("blake3_{label}"), |b| {
            b.iter(|| black_box(blake3::hash(black_box(&data))))
        });
    }
    g.finish();
}

/// Paired hash phase: each round hashes 64 MiB with every candidate, CPU
/// time of this thread; ratios to `sha2`.
fn hash_rows() {
    let size = 64 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let names = [
        "SHA-256, sha2 0.10 (SHA-NI)",
        "SHA-256, OpenSSL",
        "SHA-256, aws-lc-rs",
        "BLAKE3, blake3 1 (1 thread)",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let time = |f: &dyn Fn()| {
        let t0 = thread_cpu();
        f();
        size as f64 / (thread_cpu() - t0)
    };
    for _ in 0..=5 {
        let r = [
            time(&|| {
                use sha2::Digest;
                black_box(sha2::Sha256::digest(black_box(&data)));
            }),
            time(&|| {
                black_box(openssl::sha::sha256(black_box(&data)));
            }),
            time(&|| {
                black_box(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    black_box(&data),
                ));
            }),
            time(&|| {
                black_box(blake3::hash(black_box(&data)));
            }),
        ];
        for (v, x) in rates.iter_mut().zip(r) {
            v.push(x);
        }
    }
    for v in rates.iter_mut() {
        v.remove(0);
    }
    let base = rates[0].clone();
    for (i, name) in names.iter().enumerate() {
        let mut ratio: Vec<f64> = rates[i].iter().zip(&base).map(|(a, b)| a / b).collect();
        let lo = ratio.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratio.iter().copied().fold(0.0, f64::max);
        let r = median(&mut ratio);
        row(
            &format!("file hash, 64 MiB, CPU-normalised ({name})"),
            &format!("{:.0} MB/CPU-s", median(&mut rates[i].clone()) / 1e6),
            &format!("{:.0} MB/CPU-s sha2", median(&mut base.clone()) / 1e6),
            &format!("{r:.2}x (rounds {lo:.2}-{hi:.2})"),
            "report (wire stays SHA-256)",
            None,
        );
    }
}

fn main() {
    agree();
    let mut c = criterion();
    aead_group(&mut c);
    hash_group(&mut c);
    c.final_summary();
    if measuring() {
        // The criterion groups above are wall time, run one after the
        // other; the rows come from the paired phases (CPU time, rounds).
        paired_rows();
        hash_rows();
    }
}
