//! Measures the encryption stage: raw AES-256-GCM in place, then the encrypt
//! writer and the decrypt reader end to end in memory. Run in release:
//! `cargo run --release --example crypto_throughput [MiB]`.
//!
//! `... crypto_throughput FILE PASSPHRASE` instead decrypts FILE (ours or
//! `.gpg`) from disk to nowhere, for throughput and (under `/usr/bin/time -v`)
//! peak memory; `... crypto_throughput encrypt IN OUT PASSPHRASE` makes one.

use std::time::Instant;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use selmai_backup::config::Secret;
use selmai_backup::format::crypto::{decrypt_reader, encrypt_writer, KdfParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rate(bytes: usize, secs: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / secs / (1024.0 * 1024.0))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, input, output, pass] if cmd == "encrypt" => {
            return encrypt_file(input, output, pass).await
        }
        [path, pass] => return decrypt_file(path, pass).await,
        _ => {}
    }
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    println!(
        "aes crate uses hardware AES: {}",
        selmai_backup::format::crypto::aes_hardware_accelerated()
    );
    println!(
        "CPU features detected at run time: aes={} pclmulqdq={} avx2={} vaes={}",
        std::is_x86_feature_detected!("aes"),
        std::is_x86_feature_detected!("pclmulqdq"),
        std::is_x86_feature_detected!("avx2"),
        std::is_x86_feature_detected!("vaes"),
    );

    // 1. The primitive alone: 64 KiB segments encrypted in place.
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
    let mut seg = vec![0x5au8; 64 * 1024];
    let aad = [1u8; 91];
    let start = Instant::now();
    for i in 0..total / seg.len() {
        let mut n = [0u8; 12];
        n[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        cipher
            .encrypt_inout_detached(&Nonce::from(n), &aad, (&mut seg[..]).into())
            .unwrap();
    }
    println!(
        "AES-256-GCM in place, 64 KiB segments: {}",
        rate(total, start.elapsed().as_secs_f64())
    );

    // 2. The encrypt writer into a sink, with the write sizes a compressor makes.
    let pass = Secret::new("benchmark passphrase");
    let chunk = vec![0xa5u8; 32 * 1024];
    for size in [8 * 1024, 32 * 1024] {
        let mut w = encrypt_writer(Box::new(tokio::io::sink()), &pass, KdfParams::for_tests())
            .await
            .unwrap();
        let start = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(size);
            w.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        w.shutdown().await.unwrap();
        println!(
            "encrypt writer, {} KiB writes: {}",
            size / 1024,
            rate(total, start.elapsed().as_secs_f64())
        );
    }

    // 3. Decrypt reader from memory.
    let sink = Collect::default();
    {
        let mut w = encrypt_writer(Box::new(sink.clone()), &pass, KdfParams::for_tests())
            .await
            .unwrap();
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        w.shutdown().await.unwrap();
    }
    let file = std::mem::take(&mut *sink.0.lock().unwrap());
    let mut r = decrypt_reader(Box::new(std::io::Cursor::new(file)), &pass)
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, total);
    println!(
        "decrypt reader, 64 KiB reads: {}",
        rate(total, start.elapsed().as_secs_f64())
    );

    // 4. The KDF at its default cost (once per file).
    let start = Instant::now();
    let _ = encrypt_writer(Box::new(tokio::io::sink()), &pass, KdfParams::default())
        .await
        .unwrap();
    println!(
        "Argon2id at default cost (64 MiB, t=3, p=4): {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
}

async fn encrypt_file(input: &str, output: &str, pass: &str) {
    let mut src = tokio::fs::File::open(input).await.unwrap();
    let dst = tokio::fs::File::create(output).await.unwrap();
    let start = Instant::now();
    let mut w = encrypt_writer(Box::new(dst), &Secret::new(pass), KdfParams::default())
        .await
        .unwrap();
    let n = tokio::io::copy(&mut src, &mut w).await.unwrap();
    w.shutdown().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "encrypted {n} bytes in {secs:.2} s: {}",
        rate(n as usize, secs)
    );
}

async fn decrypt_file(path: &str, pass: &str) {
    let file = tokio::fs::File::open(path).await.unwrap();
    let size = file.metadata().await.unwrap().len() as usize;
    let start = Instant::now();
    let (mut r, kind) = selmai_backup::format::crypto::decrypt_any(
        Box::new(tokio::io::BufReader::new(file)),
        Some(&Secret::new(pass)),
    )
    .await
    .unwrap();
    let n = tokio::io::copy(&mut r, &mut tokio::io::sink())
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{kind:?}: {n} bytes out of {size} in {secs:.2} s: {}",
        rate(size, secs)
    );
}

/// An in-memory sink that stays reachable after being boxed.
#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
