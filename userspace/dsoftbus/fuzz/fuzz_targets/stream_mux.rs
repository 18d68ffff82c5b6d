//! Stream decoder + mux: never panics; anything that decodes re-encodes to
//! the same bytes; the mux stays within its bounds whatever a peer sends.
#![no_main]

use dsoftbus::stream::{decode, Mux, StreamConfig};
use dsoftbus::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode(data) {
        assert_eq!(f.encode(), data);
    }
    // The input as a sequence of messages: 1 length byte, then the message
    // (a leading 0x30 0x01 is added so most of them reach the mux's rules).
    let mut mux = Mux::new(StreamConfig::default(), data.first().is_some_and(|b| b & 1 == 0), Instant::ZERO);
    let mut rest = data;
    let mut now = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let mut msg = vec![0x30, 0x01];
        msg.extend_from_slice(&tail[..n]);
        rest = &tail[n..];
        now += 1000;
        let _ = mux.handle_input(&msg, Instant::from_millis(now));
        let _ = mux.handle_timeout(Instant::from_millis(now));
        while mux.poll_transmit().is_some() {}
        while mux.poll_event().is_some() {}
        let s = mux.stats();
        let c = mux.config();
        assert!(s.recv_buffered <= c.session_window as usize);
        assert!(s.max_stream_recv_buffered <= c.stream_window as usize);
        assert!(s.incoming_streams <= c.max_incoming_streams);
        assert!(s.pending_control <= c.max_pending_control);
        if mux.error().is_some() {
            break;
        }
    }
});
