//! A user flooding chimed over the protocol, for the fairness test (`tests/tests/fairness.rs`):
//! it holds connections open and submits jobs as fast as chimed takes them, pipelined, from a
//! few connections, until it is killed. Run it as the flooding user (`setpriv`): chimed judges
//! it by the uid the kernel reports.
//!
//! ```text
//! flood-client SOCKET HELD SUBMITTERS   # holds up to HELD connections, submits on SUBMITTERS
//! ```
//!
//! Being one process, it floods chimed with requests rather than the machine with processes
//! (what chimectl in a shell loop would do), so the fairness test measures what chimed lets one
//! user take from another.

use chime_proto::codec::{decode, encode};
use chime_proto::{
    Command, ExecSpec, Handshake, Hello, JobSpec, Request, RequestFrame, ScheduleSpec, SubmitJob,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Requests in flight per submitting connection.
const IN_FLIGHT: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, held, submitters] = &args[..] else {
        eprintln!("usage: flood-client SOCKET HELD SUBMITTERS");
        std::process::exit(2);
    };
    let held: usize = held.parse().expect("HELD is a number");
    let submitters: usize = submitters.parse().expect("SUBMITTERS is a number");
    // The submitters connect first, then every other connection chimed will give is held.
    let threads: Vec<_> = (0..submitters)
        .map(|_| {
            let socket = socket.clone();
            let stream = connect(&socket);
            std::thread::spawn(move || submit_forever(&socket, stream))
        })
        .collect();
    let mut keep = Vec::new();
    for _ in 0..held {
        match connect(socket) {
            Some(stream) => keep.push(stream),
            None => break,
        }
    }
    println!("flooding: {} connections held", keep.len());
    for thread in threads {
        let _ = thread.join();
    }
}

/// A connection past the handshake; `None` when chimed refuses it.
fn connect(socket: &str) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(socket).ok()?;
    send(&mut stream, &encode(&Hello::new("flood-client")).ok()?).ok()?;
    let handshake: Handshake = decode(&recv(&mut stream)?).ok()?;
    handshake.ok().map(|_| stream)
}

fn send(stream: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

fn recv(stream: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// Submits jobs, `IN_FLIGHT` at a time, on `stream` and then, whenever chimed closes the
/// connection, on a new one.
fn submit_forever(socket: &str, mut stream: Option<UnixStream>) {
    let add = |id| {
        encode(&RequestFrame {
            id,
            request: Request::Submit(Box::new(SubmitJob {
                job: JobSpec::new(
                    Command::Argv(vec!["/bin/true".into()]),
                    "/tmp",
                    ScheduleSpec::After(3_600_000),
                ),
                exec: ExecSpec::default(),
                journal: false,
            })),
        })
        .expect("requests encode")
    };
    let mut id = 0u64;
    loop {
        let Some(mut stream) = stream.take().or_else(|| connect(socket)) else {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        let mut in_flight = 0;
        loop {
            while in_flight < IN_FLIGHT {
                id += 1;
                if send(&mut stream, &add(id)).is_err() {
                    break;
                }
                in_flight += 1;
            }
            if recv(&mut stream).is_none() {
                break;
            }
            in_flight -= 1;
        }
    }
}
