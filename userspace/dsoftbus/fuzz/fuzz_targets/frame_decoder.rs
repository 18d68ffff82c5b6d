//! Frame decoder: arbitrary chunking and limits never panic, never buffer
//! beyond the bound, never yield an empty or oversized frame.
#![no_main]

use dsoftbus::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let step = usize::from(data[2]).max(1);
    let mut d = FrameDecoder::new(max);
    for chunk in data[3..].chunks(step) {
        let _ = d.feed_partial(chunk);
        while let Ok(Some(f)) = d.next_frame() {
            assert!(!f.is_empty() && f.len() <= d.max_frame_len());
        }
        assert!(d.buffered() <= d.capacity());
        if d.error().is_some() {
            assert_eq!(d.space(), 0);
        }
    }
});
