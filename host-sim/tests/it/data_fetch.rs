//! `fedrecon data fetch` against a local HTTP server on 127.0.0.1 serving a generated zip: a
//! good checksum, a bad one, a truncated download resumed, a server that ignores the range.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fedrecon_host_sim::data::fetch::{FetchOptions, fetch};
use md5::{Digest, Md5};

fn make_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file("ml-1m/ratings.dat", opts).unwrap();
    for u in 1..40u32 {
        for m in 1..30u32 {
            writeln!(w, "{u}::{m}::{}::97830{u:04}", 1 + (u * m) % 5).unwrap();
        }
    }
    w.start_file("ml-1m/movies.dat", opts).unwrap();
    for m in 1..30u32 {
        writeln!(w, "{m}::Movie {m} (1999)::Drama").unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves `body` at any path with Range support until dropped.
struct Server {
    url: String,
    truncate_once: Arc<AtomicBool>,
    honour_range: Arc<AtomicBool>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(body: Vec<u8>) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = Server {
            url: format!("http://{addr}/datasets/movielens/"),
            truncate_once: Arc::default(),
            honour_range: Arc::new(AtomicBool::new(true)),
            ranges: Arc::default(),
            stop: Arc::default(),
            addr,
        };
        let (t, h, r, stop) = (
            s.truncate_once.clone(),
            s.honour_range.clone(),
            s.ranges.clone(),
            s.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut c = conn.unwrap();
                let mut rd = BufReader::new(c.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = Some(v.trim().trim_end_matches('-').parse::<usize>().unwrap());
                    }
                }
                r.lock().unwrap().push(range.map(|n| format!("bytes={n}-")));
                let (status, start) = match range {
                    Some(n) if h.load(Ordering::SeqCst) => ("206 Partial Content", n),
                    _ => ("200 OK", 0),
                };
                let part = &body[start..];
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    part.len()
                );
                let _ = c.write_all(head.as_bytes());
                let n = if t.swap(false, Ordering::SeqCst) {
                    part.len() / 2
                } else {
                    part.len()
                };
                let _ = c.write_all(&part[..n]);
                let _ = c.flush();
            }
        });
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

fn opts(s: &Server, md5: Option<String>) -> FetchOptions {
    FetchOptions {
        base_url: Some(s.url.clone()),
        md5,
        progress: false,
    }
}

#[test]
fn good_checksum_unzips_and_the_folder_loads() {
    let body = make_zip();
    let s = Server::start(body.clone());
    let d = tempfile::tempdir().unwrap();
    let dir = fetch("ml-1m", d.path(), &opts(&s, Some(md5_hex(&body)))).unwrap();
    assert_eq!(dir, d.path().join("ml-1m"));
    let r = fedrecon_host_sim::data::movielens::load(&dir).unwrap();
    assert_eq!((r.len(), r.users(), r.items()), (39 * 29, 39, 29));
    assert!(!d.path().join("ml-1m.zip").exists());
    // Already unpacked: no request.
    let n = s.ranges.lock().unwrap().len();
    assert_eq!(fetch("ml-1m", d.path(), &opts(&s, None)).unwrap(), dir);
    assert_eq!(s.ranges.lock().unwrap().len(), n);
}

#[test]
fn bad_checksum_is_refused_and_the_download_deleted() {
    let s = Server::start(make_zip());
    let d = tempfile::tempdir().unwrap();
    let e = fetch("ml-1m", d.path(), &opts(&s, Some("0".repeat(32)))).unwrap_err();
    assert!(format!("{e:#}").contains("checksum mismatch"), "{e:#}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    // The pinned ML-1M checksum is GroupLens's, which the generated zip does not have.
    let e = fetch("ml-1m", d.path(), &opts(&s, None)).unwrap_err();
    assert!(
        format!("{e:#}").contains("expected c4d9eecfca2ab87c1945afe126590906"),
        "{e:#}"
    );
}

#[test]
fn truncated_download_is_kept_and_resumed_with_a_range() {
    let body = make_zip();
    let s = Server::start(body.clone());
    s.truncate_once.store(true, Ordering::SeqCst);
    let d = tempfile::tempdir().unwrap();
    let o = opts(&s, Some(md5_hex(&body)));
    let e = fetch("ml-1m", d.path(), &o).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("run again to resume"), "{msg}");
    let part = d.path().join("ml-1m.zip.part");
    let have = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(0 < have && have < body.len(), "{have}");
    let dir = fetch("ml-1m", d.path(), &o).unwrap();
    assert_eq!(
        s.ranges.lock().unwrap().last().unwrap().as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert!(dir.join("ratings.dat").is_file() && !part.exists());
}

#[test]
fn a_server_ignoring_the_range_restarts_the_download() {
    let body = make_zip();
    let s = Server::start(body.clone());
    s.truncate_once.store(true, Ordering::SeqCst);
    s.honour_range.store(false, Ordering::SeqCst);
    let d = tempfile::tempdir().unwrap();
    let o = opts(&s, Some(md5_hex(&body)));
    assert!(fetch("ml-1m", d.path(), &o).is_err());
    let dir = fetch("ml-1m", d.path(), &o).unwrap();
    let mut f = std::fs::File::open(dir.join("ratings.dat")).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text.lines().count(), 39 * 29);
}

#[test]
fn the_command_prints_the_path_and_names_unknown_datasets() {
    let body = make_zip();
    let s = Server::start(body.clone());
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().to_str().unwrap();
    let md5 = md5_hex(&body);
    let o = common::fedrecon(&[
        "data",
        "fetch",
        "ml-1m",
        "--dest",
        dest,
        "--base-url",
        &s.url,
        "--md5",
        &md5,
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let printed = String::from_utf8(o.stdout).unwrap();
    assert_eq!(printed.trim(), d.path().join("ml-1m").to_str().unwrap());
    let o = common::fedrecon(&["data", "fetch", "ml-2m", "--dest", dest]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains(
            "unknown dataset 'ml-2m' (expected one of ml-100k, ml-1m, ml-10m, ml-25m, ml-32m)"
        ),
        "{}",
        common::stderr(&o)
    );
}
