//! A node's `GET /v1/cluster`, read over a plain TCP connection (the benches
//! connect from loopback, which the operator page answers).

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET /v1/cluster` of a node (the bench connects from loopback).
pub async fn cluster_view(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /v1/cluster HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).context("no body")?;
    Ok(serde_json::from_str(body)?)
}
