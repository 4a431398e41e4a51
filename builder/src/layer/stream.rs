//! One streaming pass from tar bytes to a stored layer blob: the caller's
//! thread writes the tar and hashes it (diffID); a compressor thread
//! compresses, hashes the compressed bytes (digest) and writes them to a
//! temp file in the store, renamed to `blobs/sha256/<hex>` at the end.
//!
//! Memory stays bounded (a few chunks in flight, whatever the layer's size)
//! and compression uses every core. Output is deterministic, the same on a
//! laptop and a 64-core CI runner: the compressor always sees the same
//! fixed-size chunks; gzip is deflated block by block with pigz's method
//! (see `pgzip`), whose bytes do not depend on the thread count; zstd runs in
//! multi-threaded mode with a fixed job size and at least one worker, whose
//! output does not depend on the worker count either.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use sha2::{Digest as _, Sha256};

use super::{LayerError, pgzip};
use crate::image::media;
use crate::store::{BlobWriter, Digest, LayerDescriptor, Store};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (deflate), which every registry and runtime reads.
    Gzip {
        /// 0-9; see [`Compression::DEFAULT_GZIP_LEVEL`].
        level: u32,
    },
    /// zstd, smaller and faster, for registries and runtimes that take it.
    Zstd {
        /// 1-22; see [`Compression::DEFAULT_ZSTD_LEVEL`].
        level: i32,
    },
}

impl Compression {
    /// The knee of the curve on two cores (see `tests/layer_bench.rs`): on
    /// ~950 MiB of shared libraries level 1 gives 435 MiB at 303 MiB/s,
    /// level 2 362 MiB at 221 MiB/s, level 6 338 MiB at 141 MiB/s. Level 1
    /// (zlib-rs's "quick" strategy) barely compresses text-like data at
    /// all; past 2 each step costs more time than it saves bytes.
    pub const DEFAULT_GZIP_LEVEL: u32 = 2;
    /// zstd's own default: faster than gzip -1 and smaller than gzip -6.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// gzip at the default level.
    pub const fn gzip() -> Self {
        Self::Gzip {
            level: Self::DEFAULT_GZIP_LEVEL,
        }
    }

    /// zstd at the default level.
    pub const fn zstd() -> Self {
        Self::Zstd {
            level: Self::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Gzip { .. } => media::OCI_LAYER_GZIP,
            Self::Zstd { .. } => media::OCI_LAYER_ZSTD,
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self::gzip()
    }
}

/// Size of the chunks handed to the compressor. Fixed, so that the
/// compressor's input sequence depends only on the tar bytes.
const CHUNK: usize = 256 * 1024;
/// zstd job size: fixed so output never depends on library defaults, and
/// small enough that workers x jobs stays far under the memory budget.
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;
/// Chunks queued between the two threads.
const IN_FLIGHT: usize = 4;

/// Receives a layer's uncompressed tar and stores it compressed; `finish`
/// returns the descriptor. Dropping it unfinished stores nothing.
#[derive(Debug)]
pub struct LayerWriter {
    compression: Compression,
    diff: Sha256,
    buf: Vec<u8>,
    to_worker: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Result<BlobWriter, LayerError>>>,
}

impl LayerWriter {
    /// Starts a layer blob in `store`.
    pub fn new(store: &Store, compression: Compression) -> Result<Self, LayerError> {
        let blob = store.blob_writer()?;
        let (to_worker, from_producer) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (give_back, spare) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let worker = thread::Builder::new()
            .name("kiln-compress".into())
            .spawn(move || compress(compression, blob, from_producer, give_back))
            .map_err(|source| LayerError::Compress { source })?;
        Ok(Self {
            compression,
            diff: Sha256::new(),
            buf: Vec::with_capacity(CHUNK),
            to_worker: Some(to_worker),
            spare,
            worker: Some(worker),
        })
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        let next = match self.spare.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        let chunk = std::mem::replace(&mut self.buf, next);
        let sent = self.to_worker.as_ref().map(|tx| tx.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            // The compressor stopped on an error; `finish` reports it.
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the layer compressor stopped",
            )),
        }
    }

    /// Waits for the compressor, stores the blob under its digest and
    /// returns the layer's descriptor. A compressor error (disk full) is
    /// returned here, whatever the tar writer saw.
    pub fn finish(mut self) -> Result<LayerDescriptor, LayerError> {
        if !self.buf.is_empty() {
            // An error here means the worker stopped; join() says why.
            let _ = self.send_chunk();
        }
        let blob = self.join()?;
        let (digest, size) = blob.commit()?;
        let diff = std::mem::take(&mut self.diff);
        Ok(LayerDescriptor {
            media_type: self.compression.media_type().to_owned(),
            digest,
            size,
            diff_id: Digest::from_hasher(diff),
        })
    }

    /// Stops without storing anything and returns the compressor's error,
    /// if it had one: the real cause when writing the tar failed with
    /// "compressor stopped".
    pub fn abort(mut self) -> Option<LayerError> {
        self.join().err()
    }

    fn join(&mut self) -> Result<BlobWriter, LayerError> {
        self.to_worker = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(LayerError::CompressorPanicked),
        }
    }
}

impl Drop for LayerWriter {
    /// Waits for the compressor so that an abandoned layer's temp file is
    /// gone when the writer is.
    fn drop(&mut self) {
        let _ = self.join();
    }
}

impl Write for LayerWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let take = data.get(..room.min(data.len())).unwrap_or(data);
        self.diff.update(take);
        self.buf.extend_from_slice(take);
        if self.buf.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(take.len())
    }

    /// Does nothing: chunks are sent only when full, so that the
    /// compressed bytes never depend on when the caller flushes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor thread: chunks in, compressed bytes into the blob.
fn compress(
    compression: Compression,
    blob: BlobWriter,
    chunks: Receiver<Vec<u8>>,
    give_back: SyncSender<Vec<u8>>,
) -> Result<BlobWriter, LayerError> {
    let io_err = |source| LayerError::Compress { source };
    let feed = |encoder: &mut dyn Write| -> Result<(), LayerError> {
        for chunk in &chunks {
            encoder.write_all(&chunk).map_err(io_err)?;
            let _ = give_back.try_send(chunk);
        }
        Ok(())
    };
    match compression {
        Compression::Gzip { level } => {
            let recycle = |block| {
                let _ = give_back.try_send(block);
            };
            pgzip::compress(level.min(9), workers(), chunks.iter(), blob, recycle).map_err(io_err)
        }
        Compression::Zstd { level } => {
            let mut encoder = zstd_encoder(blob, level, workers()).map_err(io_err)?;
            feed(&mut encoder)?;
            encoder.finish().map_err(io_err)
        }
    }
}

/// A multi-threaded zstd encoder with kiln's fixed job size.
fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.multithread(workers)?;
    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(encoder)
}

/// Compression threads: one per core, at least one (for zstd, zero would
/// mean its single-threaded mode, whose output differs).
fn workers<T: TryFrom<usize> + From<u8>>() -> T {
    let cores = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    T::try_from(cores).unwrap_or_else(|_| T::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Semi-compressible bytes, reproducible.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyz012345"[(x % 32) as usize]
            })
            .collect()
    }

    fn store_layer(
        store: &Store,
        compression: Compression,
        bytes: &[u8],
        write_size: usize,
    ) -> LayerDescriptor {
        let mut w = LayerWriter::new(store, compression).unwrap();
        for piece in bytes.chunks(write_size) {
            w.write_all(piece).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn gzip_layer_round_trips_with_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let input = data(3 * CHUNK + 123, 7);
        let d = store_layer(&store, Compression::gzip(), &input, 10_000);
        assert_eq!(d.media_type, media::OCI_LAYER_GZIP);
        assert_eq!(d.diff_id, Digest::of(&input));
        assert_eq!(store.verify(&d.digest).unwrap(), d.size);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(store.open(&d.digest).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == input);
    }

    #[test]
    fn zstd_layer_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let input = data(CHUNK + 5, 9);
        let d = store_layer(&store, Compression::zstd(), &input, 4096);
        assert_eq!(d.media_type, media::OCI_LAYER_ZSTD);
        assert_eq!(d.diff_id, Digest::of(&input));
        let out = zstd::stream::decode_all(store.open(&d.digest).unwrap()).unwrap();
        assert!(out == input);
    }

    #[test]
    fn output_does_not_depend_on_how_the_caller_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let input = data(2 * CHUNK + 77, 3);
        for compression in [Compression::gzip(), Compression::zstd()] {
            let a = store_layer(&store, compression, &input, 1);
            let b = store_layer(&store, compression, &input, 100_000);
            assert_eq!(a, b, "{compression:?}");
        }
    }

    /// zstd's multi-threaded output must not depend on the core count of the
    /// machine that builds, or two CI runners would disagree on digests.
    /// Input spans several zstd jobs so the workers really split it.
    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let input = data(5 * ZSTD_JOB_SIZE as usize, 5);
        let compress_with = |workers: u32| {
            let mut enc =
                zstd_encoder(Vec::new(), Compression::DEFAULT_ZSTD_LEVEL, workers).unwrap();
            for chunk in input.chunks(CHUNK) {
                enc.write_all(chunk).unwrap();
            }
            enc.finish().unwrap()
        };
        let one = compress_with(1);
        assert!(compress_with(2) == one);
        assert!(compress_with(4) == one);
    }

    #[test]
    fn dropped_writer_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let mut w = LayerWriter::new(&store, Compression::gzip()).unwrap();
        w.write_all(&data(CHUNK * 2, 1)).unwrap();
        assert!(w.abort().is_none());
        let mut w = LayerWriter::new(&store, Compression::zstd()).unwrap();
        w.write_all(&data(CHUNK * 2, 1)).unwrap();
        drop(w);
        let left = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "temp files left behind");
    }
}
