//! Gzip on every CPU, with bytes that do not depend on how many there are.
//!
//! The input is cut into [`BLOCK`]-byte blocks. Each block is deflated on its own, primed
//! with the 32 KiB before it (so matches reach back across the cut and the ratio stays
//! close to one stream's), and ended on a byte boundary with a sync flush; the blocks in
//! order make one deflate stream, closed by an empty final block, in one gzip member (the
//! layout pigz writes). A block's output depends only on its bytes and the 32 KiB before
//! it, never on which thread made it or on how the writer was fed, so a layer's digest
//! depends on its tar alone.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress};

/// The size of the blocks compressed apart.
pub const BLOCK: usize = 128 << 10;
/// Deflate's window: how much of the previous block primes the next.
const WINDOW: usize = 32 << 10;
/// Threads at most (layers are written a few at a time; more buys little at level 1).
const MAX_THREADS: usize = 8;

/// The gzip header: no name, mtime 0, "fastest" extra flags at level 1, OS unknown.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        0..=1 => 4,
        9.. => 2,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// Deflate `input` primed with `dict`, ending with a sync flush (`last`: with the final
/// block instead).
fn deflate(input: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Room for incompressible input (deflate's stored blocks add 5 bytes per 16 KiB) and
    // the flush, so one call normally does it all.
    let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 1024);
    let mut consumed = 0usize;
    loop {
        let before = c.total_in();
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        consumed += (c.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        let done = match flush {
            FlushCompress::Finish => status == flate2::Status::StreamEnd,
            _ => consumed == input.len() && room_left,
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 << 10));
    }
}

struct Job {
    input: Vec<u8>,
    dict: Vec<u8>,
    done: SyncSender<io::Result<Vec<u8>>>,
}

/// Threads deflating blocks; they end when the pool is dropped.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: u32) -> io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = rx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("nbrt-gzip-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // The writer may have gone (an error elsewhere): nothing to tell then.
                    let _ = job.done.send(deflate(&job.input, &job.dict, level, false));
                })?;
            workers.push(worker);
        }
        Ok(Pool {
            jobs: Some(tx),
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A gzip writer that deflates [`BLOCK`]s on `threads` threads; `finish` writes the end of
/// the stream and returns the inner writer.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    pool: Option<Pool>,
    /// Input not yet a whole block.
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes of the block before.
    dict: Vec<u8>,
    /// Blocks the pool is deflating, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    crc: crc32fast::Hasher,
    size: u64,
}

/// The threads to use: the CPUs this process may run on, at most [`MAX_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&header(level))?;
        Ok(ParallelGzip {
            out,
            level,
            threads: threads.max(1),
            pool: None,
            block: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            in_flight: VecDeque::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
        })
    }

    /// Hand the whole block on: to the pool with more than one thread (started with the
    /// first block, so small layers start no threads), else deflated here.
    fn send_block(&mut self) -> io::Result<()> {
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        self.dict = input[input.len().saturating_sub(WINDOW)..].to_vec();
        if self.threads == 1 {
            // Nothing is ever in flight on one thread: the block goes out at once.
            let done = deflate(&input, &dict, self.level, false)?;
            self.out.write_all(&done)?;
        } else {
            if self.pool.is_none() {
                self.pool = Some(Pool::new(self.threads, self.level)?);
            }
            let (done, result) = mpsc::sync_channel(1);
            let sent = self
                .pool
                .as_ref()
                .and_then(|p| p.jobs.as_ref())
                .map(|jobs| jobs.send(Job { input, dict, done }));
            if !matches!(sent, Some(Ok(()))) {
                return Err(io::Error::other("the gzip threads stopped"));
            }
            self.in_flight.push_back(result);
        }
        // Keep at most two blocks per thread on their way: memory stays bounded.
        while self.in_flight.len() > self.threads * 2 {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Write the oldest block's output, waiting for it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let bytes = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip thread stopped"))??;
        self.out.write_all(&bytes)
    }

    /// Write what is left, the final block and the trailer; the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() {
            self.send_block()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let end = deflate(&[], &[], self.level, true)?;
        self.out.write_all(&end)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        // ISIZE: the input's size modulo 2^32 (RFC 1952).
        self.out.write_all(&(self.size as u32).to_le_bytes())?;
        self.pool = None;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }

    /// Writes out the blocks already deflated; a partial block stays (a flush must not
    /// change where blocks are cut).
    fn flush(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: words from a small generator.
        let mut x: u64 = 7;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = (x >> 33) % 512;
            out.extend_from_slice(format!("w{word} ").as_bytes());
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 1, threads).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// The size of `data` gzipped as one stream at level 1.
    fn one_stream(data: &[u8]) -> usize {
        let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        one.write_all(data).unwrap();
        one.finish().unwrap().len()
    }

    #[test]
    fn the_same_bytes_on_any_number_of_threads_and_write_sizes() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 123] {
            let data = sample(len);
            let one = gzip(&data, 1, 4096);
            assert_eq!(gunzip(&one), data, "round trip of {len} bytes");
            for (threads, write) in [(2, 1 << 20), (3, 1000), (8, 65536)] {
                assert_eq!(
                    gzip(&data, threads, write),
                    one,
                    "{len} bytes on {threads} threads in writes of {write}"
                );
            }
        }
    }

    #[test]
    fn incompressible_input_and_the_trailer() {
        // Random bytes: every block stored, the output a little larger than the input.
        let mut x: u32 = 1;
        let data: Vec<u8> = (0..3 * BLOCK + 17)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let z = gzip(&data, 2, 70_000);
        // No worse than one stream at the same level (zlib-rs' level 1 codes such input
        // with fixed Huffman codes rather than storing it, in both).
        assert!(z.len() <= one_stream(&data) + 64, "{} bytes", z.len());
        assert_eq!(gunzip(&z), data);
        // The trailer: CRC-32 and size, as gzip(1) checks them.
        let n = z.len();
        assert_eq!(&z[n - 4..], &(data.len() as u32).to_le_bytes());
        assert_eq!(&z[n - 8..n - 4], &crc32fast::hash(&data).to_le_bytes());
    }

    #[test]
    fn priming_keeps_the_ratio_of_one_stream() {
        let data = sample(16 * BLOCK);
        let parallel = gzip(&data, 2, BLOCK).len();
        let one = one_stream(&data);
        assert!(
            parallel as f64 <= one as f64 * 1.05,
            "parallel {parallel} bytes against one stream's {one}"
        );
    }
}
