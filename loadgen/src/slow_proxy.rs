//! `slow-proxy`: a TCP proxy that holds back every byte a client sends for a
//! fixed delay before passing it on. Put in front of ClickHouse it makes every
//! query and INSERT at least that much slower, on demand, without touching the
//! server: the benchmark uses it to show that the worker's memory stays bounded
//! while ClickHouse is slow, and the e2e suite (with `--only-with INSERT`) to keep
//! an INSERT in flight while a rebalance happens.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Args)]
pub struct SlowProxyArgs {
    /// Where clients connect.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The server behind it.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// How long every chunk a client sends is held back.
    #[arg(long)]
    pub delay_ms: u64,
    /// Hold back only chunks containing this text (and, to keep the order,
    /// what follows them on the connection); the rest passes at once.
    #[arg(long)]
    pub only_with: Option<String>,
}

/// Which chunks are held back, and for how long.
#[derive(Debug, Clone)]
struct Delay {
    by: Duration,
    only_with: Option<Vec<u8>>,
}

impl Delay {
    fn applies_to(&self, chunk: &[u8]) -> bool {
        self.only_with.as_ref().is_none_or(|text| {
            !text.is_empty()
                && chunk
                    .windows(text.len())
                    .any(|window| window == text.as_slice())
        })
    }
}

pub async fn run(args: SlowProxyArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let delay = Delay {
        by: Duration::from_millis(args.delay_ms),
        only_with: args.only_with.map(String::into_bytes),
    };
    eprintln!(
        "slow-proxy: {} -> {}, {} ms on client chunks ({:?})",
        args.listen,
        args.upstream,
        args.delay_ms,
        delay.only_with.as_deref().map(String::from_utf8_lossy)
    );
    loop {
        let (client, _) = listener.accept().await?;
        let (upstream, delay) = (args.upstream, delay.clone());
        tokio::spawn(async move {
            if let Err(error) = serve(client, upstream, delay).await {
                eprintln!("slow-proxy: connection ended: {error}");
            }
        });
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, delay: Delay) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let to_server = forward_delayed(client_read, server_write, delay);
    let to_client = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::try_join!(to_server, to_client)?;
    Ok(())
}

/// Reads chunks as they come and writes each one `delay` after it was read
/// (or at once, if the delay does not apply to it), in order: a pipe with
/// latency, not a throttle.
async fn forward_delayed(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Delay,
) -> std::io::Result<()> {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(()); // dropping `chunks` ends the writer
            }
            let chunk = &buffer[..n];
            let at = if delay.applies_to(chunk) {
                Instant::now() + delay.by
            } else {
                Instant::now()
            };
            let _ = chunks.send((at, chunk.to_vec()));
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(reader, writer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_intact_and_no_sooner_than_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("test step");
        let upstream = echo.local_addr().expect("test step");
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.expect("test step");
            let mut received = Vec::new();
            socket.read_to_end(&mut received).await.expect("test step");
            socket.write_all(&received).await.expect("test step");
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("test step");
        let listen = proxy.local_addr().expect("test step");
        tokio::spawn(async move {
            let (client, _) = proxy.accept().await.expect("test step");
            let delay = Delay {
                by: Duration::from_millis(300),
                only_with: None,
            };
            serve(client, upstream, delay).await.expect("test step");
        });
        let started = Instant::now();
        let mut client = TcpStream::connect(listen).await.expect("test step");
        client.write_all(b"INSERT 1").await.expect("test step");
        client.shutdown().await.expect("test step");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("test step");
        assert_eq!(answer, b"INSERT 1");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    #[test]
    fn only_chunks_with_the_text_are_held_back() {
        let delay = Delay {
            by: Duration::from_secs(1),
            only_with: Some(b"INSERT".to_vec()),
        };
        assert!(delay.applies_to(b"POST /?query=INSERT+INTO+events HTTP/1.1"));
        assert!(!delay.applies_to(b"POST /?query=SELECT+1 HTTP/1.1"));
        let every = Delay {
            only_with: None,
            ..delay
        };
        assert!(every.applies_to(b"anything"));
    }
}
