//! keystored: the device's identity, kept in one small process.
//!
//! On start it opens the record store (`nexus-recstore`) on the disk that
//! blkd serves, and either loads the device's static X25519 secret
//! (`keystored: identity loaded key=<fp>`) or, on a first boot with an empty
//! disk, draws one from the hardware RNG and stores it
//! (`keystored: identity created key=<fp>`). The fingerprint is the first 8
//! bytes of the public key in hex, as the Linux CLI prints it; the secret is
//! never logged and never leaves this address space: dsoftbusd asks for the
//! public key and for `X25519(secret, peer)` (`nexus-keyclient`), nothing else.
//!
//! It also keeps dsoftbusd's known-peer pins, as one record (`pins`) whose
//! bytes dsoftbusd encodes; each save is one atomic store update.
//!
//! Bad storage is loud, never silent: a corrupt or foreign store, or an
//! identity record of the wrong size, gives `keystored: store corrupt
//! (<why>); refusing` and every request is refused, so dsoftbusd starts no
//! session — unless the boot option `keystored.reset=1` asks to re-create
//! the identity, which is logged. A machine without a disk gets an identity
//! for this boot only, and says so.

#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dsoftbus::SecretKey;
use nexus_abi::{entropy, Caps, Channel, IpcError, ServiceError, ServiceFuture};
use nexus_blkclient::{BlkClient, BlkError, Request as BlkRequest, MAX_SECTORS, SECTOR};
use nexus_keyclient::{encode_answer, KeyError, Request, KEY_LEN};
use nexus_recstore::{BlockDevice, OpenError, Store};

/// The record holding the device's static secret.
pub const IDENTITY_KEY: &[u8] = b"identity";
/// The record holding dsoftbusd's pins blob.
pub const PINS_KEY: &[u8] = b"pins";

/// Entry point.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

/// The disk as the record store sees it: whole sectors through blkd.
struct IpcDisk {
    blk: &'static BlkClient,
    sectors: u64,
}

impl BlockDevice for IpcDisk {
    type Error = BlkError;

    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, first: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let step = usize::from(MAX_SECTORS) * SECTOR;
        for (i, chunk) in buf.chunks_mut(step).enumerate() {
            let count = u16::try_from(chunk.len() / SECTOR).map_err(|_| BlkError::Malformed)?;
            let sector = first + (i * usize::from(MAX_SECTORS)) as u64;
            let data = self
                .blk
                .call_blocking(&BlkRequest::Read { sector, count })?;
            if data.len() != chunk.len() {
                return Err(BlkError::Malformed);
            }
            chunk.copy_from_slice(&data);
        }
        Ok(())
    }

    fn write(&mut self, first: u64, buf: &[u8]) -> Result<(), BlkError> {
        let step = usize::from(MAX_SECTORS) * SECTOR;
        for (i, chunk) in buf.chunks(step).enumerate() {
            let sector = first + (i * usize::from(MAX_SECTORS)) as u64;
            self.blk.call_blocking(&BlkRequest::Write {
                sector,
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlkError> {
        self.blk.call_blocking(&BlkRequest::Flush).map(|_| ())
    }
}

/// What keystored can do for its client.
enum Identity {
    Ready(SecretKey),
    Refused(String),
}

fn fingerprint(secret: &SecretKey) -> String {
    let public = secret.public_key();
    let mut s = String::new();
    for b in &public.as_bytes()[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn fresh_secret() -> Result<([u8; KEY_LEN], SecretKey), ServiceError> {
    let mut bytes = [0u8; KEY_LEN];
    entropy::fill(&mut bytes).map_err(|e| ServiceError::new(format!("entropy: {e}")))?;
    Ok((bytes, SecretKey::from_bytes(bytes)))
}

type Loaded = (Identity, Option<Store<IpcDisk>>);

/// Make a new identity and store it; a store that cannot take it refuses.
fn create(mut store: Store<IpcDisk>, why: &str) -> Result<Loaded, ServiceError> {
    let (bytes, secret) = fresh_secret()?;
    if let Err(e) = store.put(IDENTITY_KEY, &bytes) {
        log::error!("keystored: cannot persist a new identity ({e:?}); refusing");
        return Ok((
            Identity::Refused(format!("store write failed: {e:?}")),
            None,
        ));
    }
    log::info!(
        "keystored: identity created key={} ({why})",
        fingerprint(&secret)
    );
    Ok((Identity::Ready(secret), Some(store)))
}

fn load(blk: Option<&'static BlkClient>, reset: bool) -> Result<Loaded, ServiceError> {
    let Some(blk) = blk else {
        return ephemeral("no storage service");
    };
    let sectors = match blk.sectors() {
        Ok(n) => n,
        Err(BlkError::NoDisk) => return ephemeral("no disk attached"),
        Err(e) => {
            log::error!("keystored: store corrupt (disk unusable: {e}); refusing");
            return Ok((Identity::Refused(format!("disk: {e}")), None));
        }
    };
    let disk = || IpcDisk { blk, sectors };
    let opened = Store::open(disk());
    let store = match opened {
        Ok((store, report)) => {
            if !report.clean() {
                log::warn!("keystored: store repaired on open ({report:?})");
            }
            store
        }
        Err(OpenError::Empty) => {
            let store = Store::format(disk())
                .map_err(|e| ServiceError::new(format!("formatting an empty disk: {e:?}")))?;
            return create(store, "first boot: empty disk formatted");
        }
        Err(e) if reset => {
            log::warn!(
                "keystored: store corrupt ({e:?}); keystored.reset=1: re-creating the identity"
            );
            let store = Store::format(disk())
                .map_err(|e| ServiceError::new(format!("formatting for reset: {e:?}")))?;
            return create(store, "keystored.reset=1");
        }
        Err(e) => {
            log::error!("keystored: store corrupt ({e:?}); refusing");
            return Ok((Identity::Refused(format!("{e:?}")), None));
        }
    };
    let record = store
        .get(IDENTITY_KEY)
        .map(|v| (<[u8; KEY_LEN]>::try_from(v), v.len()));
    match record {
        Some((Ok(bytes), _)) => {
            let secret = SecretKey::from_bytes(bytes);
            log::info!("keystored: identity loaded key={}", fingerprint(&secret));
            Ok((Identity::Ready(secret), Some(store)))
        }
        Some((Err(_), _)) if reset => {
            log::warn!("keystored: identity record malformed; keystored.reset=1: re-creating");
            create(store, "keystored.reset=1")
        }
        Some((Err(_), len)) => {
            log::error!("keystored: store corrupt (identity record is {len} bytes); refusing");
            Ok((
                Identity::Refused(String::from("identity record malformed")),
                None,
            ))
        }
        None => create(store, "store had no identity"),
    }
}

fn ephemeral(why: &str) -> Result<Loaded, ServiceError> {
    let (_, secret) = fresh_secret()?;
    log::warn!(
        "keystored: {why}; identity for this boot only key={} (lost at shutdown)",
        fingerprint(&secret)
    );
    Ok((Identity::Ready(secret), None))
}

fn answer(
    id: &Identity,
    store: &mut Option<Store<IpcDisk>>,
    req: Result<Request, KeyError>,
) -> Result<Vec<u8>, KeyError> {
    let secret = match id {
        Identity::Ready(s) => s,
        Identity::Refused(_) => return Err(KeyError::Refused),
    };
    match req? {
        Request::Public => Ok(secret.public_key().as_bytes().to_vec()),
        Request::Dh(peer) => Ok(secret.diffie_hellman(&peer).to_vec()),
        Request::PinsLoad => Ok(store
            .as_ref()
            .and_then(|s| s.get(PINS_KEY))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()),
        Request::PinsSave(blob) => {
            let Some(s) = store.as_mut() else {
                return Err(KeyError::Refused);
            };
            match s.put(PINS_KEY, &blob) {
                Ok(()) => Ok(Vec::new()),
                Err(e) => {
                    // A failed write leaves the old contents but poisons the
                    // store until reopened; say so, keep serving keys.
                    log::error!(
                        "keystored: pins not saved ({e:?}); pins are kept in dsoftbusd only"
                    );
                    *store = None;
                    Err(KeyError::Refused)
                }
            }
        }
    }
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let reset = caps.config("reset") == Some("1");
    let blk: Option<&'static BlkClient> = caps
        .take_channel("blk")
        .map(|c| &*Box::leak(Box::new(BlkClient::new(c))));
    let init = caps.take_channel("init");
    let mut client = caps.take_channel("client:dsoftbusd");
    register(&mut caps).await;
    let (id, mut store) = load(blk, reset)?;
    if let Identity::Refused(why) = &id {
        log::warn!("keystored: refusing every request ({why})");
    }
    loop {
        let Some(chan) = client.as_ref() else {
            client = next_client(init.as_ref()).await?;
            continue;
        };
        match chan.recv().await {
            Ok(msg) => {
                let reply = encode_answer(&answer(&id, &mut store, Request::decode(&msg)));
                if chan.send(&reply).await.is_err() {
                    client = None;
                }
            }
            // dsoftbusd ended (or was restarted): wait for init to grant the
            // next one.
            Err(IpcError::Closed) => client = None,
            Err(e) => return Err(ServiceError::new(format!("client channel: {e}"))),
        }
    }
}

/// Register with samgrd as `keystored` (the registry lists who runs; the
/// key service itself is reachable only by the process init linked to it).
async fn register(caps: &mut Caps) {
    if let Err(e) = nexus_samgrclient::register_self(caps, "device identity (key custody)").await {
        log::warn!("keystored: samgrd registration refused ({e})");
    }
}

/// The next dsoftbusd channel init grants (after a restart of dsoftbusd).
async fn next_client(init: Option<&Channel>) -> Result<Option<Channel>, ServiceError> {
    let Some(init) = init else {
        // Nobody can ever reach us again.
        return Err(ServiceError::new("client gone and no init channel"));
    };
    loop {
        let msg = init
            .recv()
            .await
            .map_err(|e| ServiceError::new(format!("init channel: {e}")))?;
        if let Some(grants) = Caps::decode_grant(&msg) {
            if let Some((_, chan)) = grants.into_iter().find(|(r, _)| *r == "client:dsoftbusd") {
                return Ok(Some(chan));
            }
        }
    }
}
