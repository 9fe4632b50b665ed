//! Fuzz the configuration journal decoder (`config::journal::replay`): the input is written as
//! the only journal file and replayed. It must return `Ok` or `Err`, never panic.
//!
//! Random bytes almost never carry a valid CRC-32, so the input is also replayed a second time
//! with every record's checksum recomputed: that lets the fuzzer reach the JSON decoding of the
//! ops and the sequence checks. A replay that succeeded may have cut a torn tail; replaying the
//! cut file again must then succeed with the same transactions and nothing left to cut.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use confluent::config::journal::replay;
use libfuzzer_sys::fuzz_target;

/// Bytes before each record's payload: length, CRC-32, sequence number (see journal.rs).
const RECORD_HEADER: usize = 16;

/// One directory per fuzzing process, reused for every input. It is on `/dev/shm` when that
/// exists: replay syncs the file it cuts, and on a disk that alone makes fuzzing 30 times slower.
fn journal_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shared_memory = Path::new("/dev/shm");
        let parent = if shared_memory.is_dir() {
            shared_memory.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = parent.join(format!("confluent-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        dir
    })
}

/// Recompute the checksum of every record whose header and payload are complete.
fn with_valid_checksums(input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..offset + RECORD_HEADER) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let start = offset + RECORD_HEADER;
        let Some(end) = start.checked_add(length).filter(|end| *end <= bytes.len()) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[offset + 8..start]);
        hasher.update(&bytes[start..end]);
        bytes[offset + 4..offset + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
        offset = end;
    }
    bytes
}

fn replay_file(bytes: &[u8]) {
    let dir = journal_dir();
    let path = dir.join("00000000000000000001.wal");
    std::fs::write(&path, bytes).expect("the journal file can be written");
    if let Ok((transactions, last_seq)) = replay(dir, 0) {
        assert_eq!(u64::try_from(transactions.len()).ok(), Some(last_seq));
        let length_after_cut = std::fs::metadata(&path).map(|meta| meta.len()).ok();
        let (again, again_last_seq) =
            replay(dir, 0).expect("a journal that replayed once replays again");
        assert_eq!(again.len(), transactions.len());
        assert_eq!(again_last_seq, last_seq);
        assert_eq!(
            std::fs::metadata(&path).map(|meta| meta.len()).ok(),
            length_after_cut,
            "the second replay found another torn tail to cut"
        );
    }
    let _ = std::fs::remove_file(&path);
}

fuzz_target!(|data: &[u8]| {
    replay_file(data);
    let fixed = with_valid_checksums(data);
    if fixed != data {
        replay_file(&fixed);
    }
});
