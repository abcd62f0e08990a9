//! The harness checks itself, without any server: a flipped read or a lost
//! write in a recorded history is reported (the history → checker → report
//! path), and the proxy names the dialer from its hello and cuts and heals a
//! pair.

use super::one_run::check;
use super::*;

#[test]
fn a_flipped_read_or_a_lost_write_in_a_recorded_history_is_reported() {
    let k = || b"k1".to_vec();
    let get = |v: &str| Outcome::Ok(KvOutput::Value(v.as_bytes().to_vec()));
    let set = |v: &str| KvOp::Set {
        key: k(),
        value: v.as_bytes().to_vec(),
    };
    let history = || {
        vec![
            op(0, set("10"), 0, Outcome::Ok(KvOutput::Ok), 100),
            op(1, KvOp::Get { key: k() }, 50, get("10"), 150),
            op(
                0,
                KvOp::Incr { key: k() },
                200,
                Outcome::Ok(KvOutput::Integer(11)),
                300,
            ),
            // A timed-out write that, as the later reads show, did apply.
            op(1, set("20"), 400, Outcome::Unknown("TIMEOUT".into()), 3400),
            op(
                2,
                set("30"),
                450,
                Outcome::Failed("CLUSTERDOWN".into()),
                460,
            ),
            op(0, KvOp::Get { key: k() }, 3500, get("20"), 3600),
            op(FINAL, KvOp::Get { key: k() }, 4000, get("20"), 4100),
        ]
    };
    let mut h = history();
    check("unit", 42, 0, &mut h, &[]).expect("the unmodified history is linearizable");

    // A read that returns a value nobody wrote at that point.
    let mut flipped = history();
    flipped[5].outcome = get("99");
    let report = check("unit", 42, 0, &mut flipped, &["1.000ms pause n1".into()])
        .expect_err("a flipped read must be reported");
    for needle in ["seed 42", "key k1", "✗", "GET k1 → ok 99", "pause n1"] {
        assert!(report.contains(needle), "{needle:?} missing in:\n{report}");
    }

    // An acknowledged write that the final read does not see.
    let mut lost = history();
    lost[3].outcome = Outcome::Ok(KvOutput::Ok);
    lost[5].outcome = get("11");
    lost[6].outcome = get("11");
    let report = check("unit", 7, 0, &mut lost, &[])
        .expect_err("a lost acknowledged write must be reported");
    assert!(report.contains("key k1"), "{report}");
}

#[test]
fn the_proxy_names_the_dialer_from_its_hello_and_cuts_and_heals_a_pair() {
    let hello = |from: u64, to: u64| {
        let body = encode_frame(&Frame::Hello {
            version: 1,
            cluster_id: "c".into(),
            from,
            to,
            incarnation: 7,
        })
        .expect("encode");
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    };
    let h = hello(2, 1);
    assert_eq!(read_frame(&mut h.as_slice()).expect("frame"), h);
    assert_eq!(dialer_of(&h[4..], 0, 2).expect("dialer"), 1);
    assert!(
        dialer_of(&h[4..], 1, 2).is_err(),
        "a hello on the wrong front port"
    );
    assert!(
        dialer_of(&hello(3, 1)[4..], 0, 2).is_err(),
        "an unknown node"
    );

    // Two "nodes": listeners that stand for their real peer ports.
    let upstream: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = upstream
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let net = Network::start(&ports).expect("proxy");
    let short = Duration::from_millis(300);
    let dial = || {
        let s = TcpStream::connect(("127.0.0.1", net.front_port(0))).expect("dial the front port");
        s.set_read_timeout(Some(short)).expect("timeout");
        s
    };
    let accept = || {
        let (s, _) = upstream[0].accept().expect("accept");
        s.set_read_timeout(Some(short)).expect("timeout");
        s
    };
    // What arrived within `short`: None if nothing, empty if closed.
    let read_some = |s: &mut TcpStream| {
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => Some(Vec::new()), // reset
        }
    };

    // Node 2 dials node 1: the hello and what follows arrive unchanged.
    let mut dialer = dial();
    dialer.write_all(&h).expect("send hello");
    dialer.write_all(b"frames").expect("send");
    let mut node1 = accept();
    let mut got = Vec::new();
    while got.len() < h.len() + 6 {
        got.extend(read_some(&mut node1).expect("bytes through the proxy"));
    }
    assert_eq!(got, [h.clone(), b"frames".to_vec()].concat());
    node1.write_all(b"reply").expect("reply");
    assert_eq!(read_some(&mut dialer).as_deref(), Some(&b"reply"[..]));

    // A blackhole holds the bytes, both ways, and delivers them on heal.
    net.cut(0, 1, Cut::Blackhole);
    dialer.write_all(b"held").expect("send");
    node1.write_all(b"back").expect("send");
    assert_eq!(
        read_some(&mut node1),
        None,
        "a blackholed request got through"
    );
    assert_eq!(
        read_some(&mut dialer),
        None,
        "a blackholed reply got through"
    );
    net.heal_all();
    assert_eq!(read_some(&mut node1).as_deref(), Some(&b"held"[..]));
    assert_eq!(read_some(&mut dialer).as_deref(), Some(&b"back"[..]));

    // A reset closes the connection, and the next one right after its hello.
    net.cut(1, 0, Cut::Reset);
    assert_eq!(
        read_some(&mut dialer),
        Some(Vec::new()),
        "not closed by the reset"
    );
    let mut again = dial();
    again.write_all(&h).expect("send hello");
    assert_eq!(
        read_some(&mut again),
        Some(Vec::new()),
        "a new connection was let through"
    );
    assert_eq!(net.cuts(), vec![((0, 1), Cut::Reset)]);
    let stats = net.stats();
    assert!(stats.resets >= 2 && stats.held >= 2, "{stats:?}");
}
