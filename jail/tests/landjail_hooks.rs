//! What the seccomp supervisor adds over Landlock alone (the Go landjail's model): with the
//! supervisor switched off through the `insecure-test-hooks` feature, a jailed connect to the
//! proxy port on another address goes through; with it on (the only mode of a normal build),
//! the same connect is refused. This is the positive control for the proxy-port tests in
//! `landjail_escape.rs`.
//!
//! Run: `cargo test -p boundary-jail --features insecure-test-hooks --test landjail_hooks`.

use std::net::TcpListener;

use boundary_jail::{landjail, JailSpec};

fn jailed_connect(port: u16, other_port: u16) -> i32 {
    let script = format!(
        "import socket, sys\n\
         def c(p):\n\
         \x20   try:\n\
         \x20       socket.create_connection(('127.0.0.2', p), timeout=5).close(); return 'open'\n\
         \x20   except OSError as e: return str(e.errno)\n\
         a, b = c({port}), c({other_port})\n\
         sys.exit({{'open13': 10, '1313': 20}}.get(a + b, 1))\n"
    );
    let spec = JailSpec {
        program: "python3".into(),
        args: vec!["-c".into(), script.into()],
        proxy_port: port,
        ..Default::default()
    };
    let mut running = landjail::start(&spec, &Default::default()).expect("start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(running.wait())
}

#[test]
fn the_supervisor_closes_the_proxy_port_bypass_that_landlock_leaves_open() {
    // A listener outside the jail on the proxy port of another loopback address.
    let outside = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = outside.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.2:0").unwrap();
    let other_port = other.local_addr().unwrap().port();

    // Landlock alone: the proxy port is open on any address, other ports are not.
    std::env::set_var(landjail::NO_SECCOMP_ENV, "1");
    assert_eq!(
        jailed_connect(port, other_port),
        10,
        "without the supervisor, 127.0.0.2:<proxy port> should connect and other ports fail"
    );
    outside.set_nonblocking(true).unwrap();
    assert!(
        outside.accept().is_ok(),
        "the outside listener saw no connection"
    );

    // With the supervisor: both refused with EACCES.
    std::env::remove_var(landjail::NO_SECCOMP_ENV);
    assert_eq!(jailed_connect(port, other_port), 20);
    assert!(
        outside.accept().is_err(),
        "the supervisor let a connect through"
    );
}
