//! Helpers shared by the benchmark binaries: an async protocol client and process figures.

use bytes::Bytes;
use chime_proto::codec::{decode, encode, frame_codec};
use chime_proto::{
    DaemonStatus, Handshake, Hello, MAX_REPLY_FRAME, ReplyFrame, Request, RequestFrame, Response,
    ServerMessage,
};
use futures::{SinkExt, StreamExt};
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A raw async connection after the handshake.
pub type Conn = Framed<UnixStream, LengthDelimitedCodec>;

pub async fn connect(socket: &Path) -> Conn {
    let stream = UnixStream::connect(socket)
        .await
        .expect("connect to chimed");
    let mut framed = Framed::new(stream, frame_codec(MAX_REPLY_FRAME));
    framed
        .send(Bytes::from(encode(&Hello::new("chime-bench")).unwrap()))
        .await
        .unwrap();
    let handshake: Handshake = decode(&framed.next().await.unwrap().unwrap()).unwrap();
    handshake.expect("chimed accepts the handshake");
    framed
}

/// Queues a request without flushing.
pub async fn feed(conn: &mut Conn, id: u64, request: Request) {
    let frame = encode(&RequestFrame { id, request }).unwrap();
    conn.feed(Bytes::from(frame)).await.unwrap();
}

pub async fn flush(conn: &mut Conn) {
    SinkExt::<Bytes>::flush(conn).await.unwrap();
}

/// Reads one reply.
pub async fn reply(conn: &mut Conn) -> (u64, Result<Response, chime_proto::ErrorReply>) {
    match decode(&conn.next().await.expect("a reply").unwrap()).unwrap() {
        ServerMessage::Reply(ReplyFrame { id, result }) => (id, result),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Sends `requests` on one connection, 256 in flight at a time (the daemon reads at most 256
/// per connection, so sending more before reading replies would stall both sides), and checks
/// that every one succeeded.
pub async fn send_windowed(conn: &mut Conn, requests: &[Request]) {
    for window in requests.chunks(256) {
        for (i, request) in window.iter().enumerate() {
            feed(conn, i as u64 + 1, request.clone()).await;
        }
        flush(conn).await;
        for _ in window {
            let (_, result) = reply(conn).await;
            result.expect("the request succeeds");
        }
    }
}

/// A connection that follows the event log from now on (`watch` with no `since`), and where
/// its stream starts.
pub async fn watch(socket: &Path) -> (Conn, chime_proto::WatchStart) {
    let mut conn = connect(socket).await;
    let query = chime_proto::WatchQuery {
        since: None,
        job: None,
    };
    feed(&mut conn, 1, Request::Watch(query)).await;
    flush(&mut conn).await;
    match reply(&mut conn).await.1 {
        Ok(Response::Watching(start)) => (conn, start),
        other => panic!("the watch did not start: {other:?}"),
    }
}

/// One request, one reply.
pub async fn call(conn: &mut Conn, request: Request) -> Response {
    feed(conn, 1, request).await;
    flush(conn).await;
    reply(conn).await.1.expect("the request succeeds")
}

pub async fn status(socket: &Path) -> DaemonStatus {
    let mut conn = connect(socket).await;
    match call(&mut conn, Request::Status).await {
        Response::Status(s) => *s,
        other => panic!("{other:?}"),
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The number after option `name` on the command line (`--jobs 10000`), or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
        .unwrap_or(default)
}

/// User + system CPU time the process has used.
pub fn cpu_time(pid: u32) -> Duration {
    stat_ticks(pid, [11, 12])
}

/// User + system CPU time of the thread of `pid` named `name` (its `comm`, as
/// `std::thread::Builder::name` set it); zero when there is none.
pub fn thread_cpu_time(pid: u32, name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            return ticks_of(&stat, [11, 12]);
        }
    }
    Duration::ZERO
}

/// User + system CPU time of the process's children that it has waited for.
pub fn children_cpu_time(pid: u32) -> Duration {
    stat_ticks(pid, [13, 14])
}

/// The sum of two clock-tick fields of `/proc/PID/stat`, counted after the command name.
fn stat_ticks(pid: u32, fields: [usize; 2]) -> Duration {
    ticks_of(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        fields,
    )
}

/// The sum of two clock-tick fields of a `stat` line (a process's or a thread's).
fn ticks_of(stat: &str, [a, b]: [usize; 2]) -> Duration {
    // Fields after the command name (in parentheses, may contain spaces): utime and stime are
    // fields 14 and 15 of the line, 12 and 13 after the name (cutime and cstime follow), in
    // clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(a) + ticks(b)) * 1000 / hz)
}

/// CPU time the whole machine has spent busy (all cores; everything but idle and iowait), from
/// `/proc/stat`.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis(busy * 1000 / hz)
}

/// The value at fraction `p` of sorted durations, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
