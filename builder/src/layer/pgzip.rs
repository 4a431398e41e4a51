//! gzip on several cores with pigz's method, byte-identical whatever the
//! number of threads: the stream is cut into fixed-size blocks, each block
//! is deflated on its own with the previous block's last 32 KiB as its
//! dictionary and ends with a sync flush, and the pieces are written in
//! order as one deflate stream. The result is an ordinary single-member
//! gzip file that any reader accepts.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Mutex, mpsc};
use std::thread;

use flate2::{Compress, Crc, FlushCompress};

/// deflate's window: the most a block can refer back to.
const WINDOW: usize = 32 * 1024;

/// A block's compressed bytes, and its input handed back for reuse.
type Done = io::Result<(Vec<u8>, Vec<u8>)>;

struct Job {
    block: Vec<u8>,
    dictionary: Vec<u8>,
    done: mpsc::SyncSender<Done>,
}

/// Compresses `blocks` (as sized by the caller; the output depends on the
/// block boundaries, not on `workers`) as one gzip member into `out`.
/// `recycle` gets each input block back once compressed.
pub(crate) fn compress<W: Write>(
    level: u32,
    workers: usize,
    blocks: impl Iterator<Item = Vec<u8>>,
    mut out: W,
    mut recycle: impl FnMut(Vec<u8>),
) -> io::Result<W> {
    let workers = workers.max(1);
    out.write_all(&header(level))?;
    let mut crc = Crc::new();
    let (jobs, job_queue) = mpsc::sync_channel::<Job>(workers);
    let job_queue = Mutex::new(job_queue);
    thread::scope(|scope| -> io::Result<()> {
        for _ in 0..workers {
            let job_queue = &job_queue;
            thread::Builder::new()
                .name("kiln-gzip".into())
                .spawn_scoped(scope, move || deflate_worker(level, job_queue))?;
        }
        // In flight at most: `workers` queued plus `workers` being deflated.
        let mut pending: VecDeque<mpsc::Receiver<Done>> = VecDeque::new();
        let mut dictionary = Vec::new();
        let dispatched = (|| {
            for block in blocks {
                crc.update(&block);
                let tail = block
                    .get(block.len().saturating_sub(WINDOW)..)
                    .unwrap_or_default();
                let next_dictionary = tail.to_vec();
                let (done, result) = mpsc::sync_channel(1);
                let job = Job {
                    block,
                    dictionary: std::mem::replace(&mut dictionary, next_dictionary),
                    done,
                };
                jobs.send(job).map_err(|_| stopped())?;
                pending.push_back(result);
                while pending.len() >= 2 * workers {
                    write_next(&mut pending, &mut out, &mut recycle)?;
                }
            }
            while !pending.is_empty() {
                write_next(&mut pending, &mut out, &mut recycle)?;
            }
            Ok(())
        })();
        // Closing the queue lets the workers exit so the scope can end.
        drop(jobs);
        dispatched
    })?;
    // A final empty fixed-Huffman block ends the deflate stream.
    out.write_all(&[0x03, 0x00])?;
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(out)
}

fn deflate_worker(level: u32, job_queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match job_queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = deflate_block(level, &job.block, &job.dictionary)
            .map(|compressed| (compressed, job.block));
        // The dispatcher may have stopped on an error; nothing to tell then.
        let _ = job.done.send(result);
    }
}

/// Raw deflate of one block, primed with `dictionary`, ending in a sync
/// flush so the next block's bytes can follow directly.
///
/// A fresh compressor per block: with zlib-rs 0.6 a compressor re-used
/// after `reset` does not always emit the same bytes as a new one, which
/// made the output depend on which thread had compressed what before
/// (caught by `output_does_not_depend_on_thread_count`).
fn deflate_block(level: u32, block: &[u8], dictionary: &[u8]) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    let mut input = block;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity());
        }
        let before = deflate.total_in();
        deflate
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let used = usize::try_from(deflate.total_in() - before).unwrap_or(input.len());
        input = input.get(used..).unwrap_or_default();
        // zlib: the flush is complete once it leaves output space unused.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

fn write_next<W: Write>(
    pending: &mut VecDeque<mpsc::Receiver<Done>>,
    out: &mut W,
    recycle: &mut impl FnMut(Vec<u8>),
) -> io::Result<()> {
    let Some(next) = pending.pop_front() else {
        return Ok(());
    };
    let (compressed, block) = next.recv().map_err(|_| stopped())??;
    out.write_all(&compressed)?;
    recycle(block);
    Ok(())
}

fn stopped() -> io::Error {
    io::Error::other("a gzip worker thread stopped")
}

/// A fixed gzip header: no name, mtime 0, OS "unknown" (as flate2 writes
/// it), so the bytes do not depend on the machine.
fn header(level: u32) -> [u8; 10] {
    let extra_flags = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn text(len: usize) -> Vec<u8> {
        let words = b"layer digest config manifest blob tar gzip zstd ";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(5) {
                    (x >> 8) as u8
                } else {
                    words[i % words.len()]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], workers: usize, block: usize) -> Vec<u8> {
        let blocks = data.chunks(block).map(<[u8]>::to_vec);
        compress(6, workers, blocks, Vec::new(), drop).unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_and_compresses() {
        let data = text(1_000_003);
        let z = gzip(&data, 2, 64 * 1024);
        assert!(z.len() < data.len() / 2, "{} bytes", z.len());
        assert!(gunzip(&z) == data);
    }

    #[test]
    fn empty_input_is_a_valid_gzip_file() {
        let z = gzip(b"", 2, 1024);
        assert!(gunzip(&z).is_empty());
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data = text(700_000);
        let one = gzip(&data, 1, 64 * 1024);
        for workers in [2, 3, 8] {
            assert!(gzip(&data, workers, 64 * 1024) == one, "{workers} workers");
        }
    }

    #[test]
    fn dictionary_carries_matches_across_blocks() {
        // The same 20 KB twice, split exactly between the copies: without
        // the dictionary the second block could not refer to the first.
        let half = text(20_000);
        let data = [half.clone(), half].concat();
        let primed = gzip(&data, 2, 20_000);
        let alone = gzip(&data[..20_000], 1, 20_000);
        assert!(
            primed.len() < alone.len() + 200,
            "{} vs {}",
            primed.len(),
            alone.len()
        );
        assert!(gunzip(&primed) == data);
    }
}
