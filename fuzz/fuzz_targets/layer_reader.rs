//! Feed arbitrary bytes to the layer reader, as an uncompressed tar and as a gzip stream.
//! Whatever the input, the reader must not panic, and every entry it accepts must satisfy
//! the invariants the appliers rely on.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nbrt_oci::layer::compression::{decompress, Compression};
use nbrt_oci::layer::reader::{for_each_entry, EntryKind, MAX_ENTRY_SIZE};

fn check(data: &[u8]) {
    let _ = for_each_entry(data, |entry, body| {
        assert!(!entry.path.starts_with('/'));
        assert!(!entry.path.split('/').any(|c| c == ".." || c == "." || c.is_empty()) || entry.path.is_empty());
        assert!(entry.size <= MAX_ENTRY_SIZE);
        if let EntryKind::Hardlink(target) = &entry.kind {
            assert!(!target.starts_with('/') && !target.split('/').any(|c| c == ".."));
        }
        let _ = std::io::copy(body, &mut std::io::sink());
        Ok(())
    });
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(mut r) = decompress(data, Compression::Gzip) {
        let mut plain = Vec::new();
        if std::io::Read::read_to_end(&mut (&mut r).take(1 << 20), &mut plain).is_ok() {
            check(&plain);
        }
    }
});
