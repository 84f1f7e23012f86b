//! Serves libvirt's nwfilter RPC protocol from memory on a Unix socket:
//! `memserver /tmp/x.sock`, then
//! `virsh -c 'nwfilter:///system?socket=/tmp/x.sock' nwfilter-list`.
//! Prints each call's procedure number on stderr.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: memserver SOCKET_PATH");
        std::process::exit(2);
    };
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("memserver: cannot bind {path}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("memserver: listening on {path}");
    let trace = Arc::new(Mutex::new(Vec::new()));
    let printer = trace.clone();
    std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let t = printer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for p in &t[seen..] {
                eprintln!("memserver: call proc {p}");
            }
            seen = t.len();
        }
    });
    common::serve(listener, trace);
}
