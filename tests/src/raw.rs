//! A protocol-level client for tests that speak frames directly (pipelining, garbage).

use chime_proto::codec::{decode, encode};
use chime_proto::{Handshake, Hello, Request, RequestFrame, ServerMessage};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A blocking connection that writes and reads raw frames.
#[derive(Debug)]
pub struct Raw {
    pub stream: UnixStream,
}

impl Raw {
    pub fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).expect("connect to chimed");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream }
    }

    /// Connects and completes the handshake.
    pub fn handshaken(socket: &Path) -> Self {
        let mut raw = Self::connect(socket);
        raw.send(&encode(&Hello::new("chime-tests")).unwrap());
        let handshake: Handshake = decode(&raw.recv().expect("a handshake reply")).unwrap();
        handshake.expect("the daemon accepts the handshake");
        raw
    }

    /// Writes one frame (length prefix + payload).
    pub fn send(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("write a frame");
    }

    /// Writes bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write bytes");
    }

    pub fn request(&mut self, id: u64, request: Request) {
        self.send(&encode(&RequestFrame { id, request }).unwrap());
    }

    /// Reads one frame; `None` when the daemon closed the connection.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    pub fn reply(&mut self) -> Option<ServerMessage> {
        self.recv()
            .map(|frame| decode(&frame).expect("replies decode"))
    }
}
