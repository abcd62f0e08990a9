//! The RESP codec: request parsing (pipelining, partial reads, inline
//! commands, limits, hostile input) and reply encoding in RESP2 and RESP3.

use bytes::{Bytes, BytesMut};
use raftkv::resp::{encode, parse_command, CommandParser, Limits, Protocol, ProtocolError, Reply};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A command as a client library sends it: an array of bulk strings.
fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a connection sees: the commands parsed, and the error that ended it.
type Outcome = (Vec<Vec<Bytes>>, Option<ProtocolError>);

/// Feeds `chunks` one after another into one buffer, parsing every complete
/// command after each, as a server's read loop does, with both
/// `parse_command` and a `CommandParser`, which must agree. Checks on the
/// way that `Ok(None)` consumes nothing.
fn feed(chunks: &[&[u8]], limits: &Limits) -> Outcome {
    let stateless = feed_to(chunks, |buf| parse_command(buf, limits));
    let mut parser = CommandParser::new(*limits);
    let stateful = feed_to(chunks, |buf| parser.parse(buf));
    assert_eq!(
        stateful, stateless,
        "CommandParser and parse_command disagree"
    );
    stateless
}

fn feed_to(
    chunks: &[&[u8]],
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError>,
) -> Outcome {
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.clone();
            match parse(&mut buf) {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) must consume nothing");
                    break;
                }
                Err(e) => return (commands, Some(e)),
            }
        }
    }
    (commands, None)
}

fn feed_all(input: &[u8], limits: &Limits) -> Outcome {
    feed(&[input], limits)
}

fn feed_bytewise(input: &[u8], limits: &Limits) -> Outcome {
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    feed(&chunks, limits)
}

fn args(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn parse_one(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    parse_command(&mut BytesMut::from(input), &Limits::default())
}

fn protocol_error(msg: &str) -> ProtocolError {
    ProtocolError(msg.to_owned())
}

fn encoded(reply: &Reply, protocol: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(reply, protocol, &mut out);
    out.to_vec()
}

/// xorshift64*: a tiny deterministic PRNG, so the fuzz test needs no crate
/// and fails the same way every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Mostly bytes that mean something in RESP, so that random input gets
    /// past the first byte often enough to reach the interesting paths.
    fn resp_byte(&mut self) -> u8 {
        const MEANINGFUL: &[u8] = b"*$\r\n\r\n0123456789-+ \t\"'\\xab";
        match self.below(4) {
            0 => self.next() as u8,
            _ => MEANINGFUL[self.below(MEANINGFUL.len())],
        }
    }
}

/// A pipelined buffer with every kind of request in it.
fn mixed_pipeline() -> Vec<u8> {
    let mut input = Vec::new();
    input.extend(multibulk(&[b"SET", b"key:000001", b"hello"]));
    input.extend(multibulk(&[b"GET", b"key:000001"]));
    input.extend_from_slice(b"PING\r\n");
    input.extend(multibulk(&[b"SET", b"bin", b"a\r\nb\0\xff$3\r\n"]));
    input.extend_from_slice(b"*0\r\n");
    input.extend_from_slice(b"ECHO \"two words\" 'and\\'more'\n");
    input.extend(multibulk(&[b"SET", b"empty", b""]));
    input.extend_from_slice(b"\r\n");
    // More arguments than the parser remembers from its first scan.
    let many: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i}").into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(many.iter().map(|k| k.as_slice()));
    input.extend(multibulk(&mget));
    input.extend_from_slice(b"*-1\r\n");
    input.extend(multibulk(&[b"GET", b"last"]));
    input
}

fn mixed_pipeline_commands() -> Vec<Vec<Bytes>> {
    let mut mget = vec!["MGET".to_owned()];
    mget.extend((0..20).map(|i| format!("k{i}")));
    let mget: Vec<&str> = mget.iter().map(String::as_str).collect();
    vec![
        args(&["SET", "key:000001", "hello"]),
        args(&["GET", "key:000001"]),
        args(&["PING"]),
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"bin"),
            Bytes::from_static(b"a\r\nb\0\xff$3\r\n"),
        ],
        vec![],
        args(&["ECHO", "two words", "and'more"]),
        args(&["SET", "empty", ""]),
        vec![],
        args(&mget),
        vec![],
        args(&["GET", "last"]),
    ]
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

#[test]
fn pipelined_commands_parse_one_by_one() {
    let mut buf = BytesMut::from(&mixed_pipeline()[..]);
    let limits = Limits::default();
    for expected in mixed_pipeline_commands() {
        assert_eq!(parse_command(&mut buf, &limits), Ok(Some(expected)));
    }
    assert_eq!(parse_command(&mut buf, &limits), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn partial_input_at_every_split_point_yields_the_same_commands() {
    let input = mixed_pipeline();
    let limits = Limits::default();
    let expected = (mixed_pipeline_commands(), None);
    assert_eq!(feed_all(&input, &limits), expected);
    for split in 0..=input.len() {
        let (head, tail) = input.split_at(split);
        assert_eq!(feed(&[head, tail], &limits), expected, "split at {split}");
    }
}

#[test]
fn feeding_one_byte_at_a_time_yields_the_same_commands() {
    let input = mixed_pipeline();
    let limits = Limits::default();
    assert_eq!(feed_bytewise(&input, &limits), feed_all(&input, &limits));
}

#[test]
fn a_large_value_arriving_in_many_reads_parses_once_complete() {
    let value = vec![b'v'; 1 << 20];
    let input = multibulk(&[b"SET", b"big", &value]);
    let chunks: Vec<&[u8]> = input.chunks(16 * 1024).collect();
    let (commands, error) = feed(&chunks, &Limits::default());
    assert_eq!(error, None);
    assert_eq!(
        commands,
        vec![vec![
            Bytes::from("SET"),
            Bytes::from("big"),
            Bytes::from(value)
        ]]
    );
}

#[test]
fn a_command_parser_resumes_a_many_argument_command_across_reads() {
    let keys: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("key:{i}").into_bytes())
        .collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    mset.extend(keys.iter().map(|k| k.as_slice()));
    let mut input = multibulk(&mset);
    input.extend_from_slice(b"PING\r\n");
    let mut parser = CommandParser::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    for read in input.chunks(100) {
        buf.extend_from_slice(read);
        while let Some(command) = parser.parse(&mut buf).unwrap() {
            commands.push(command);
        }
    }
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0].len(), mset.len());
    assert!(commands[0].iter().zip(&mset).all(|(got, want)| got == want));
    assert_eq!(commands[1], args(&["PING"]));
}

#[test]
fn args_are_zero_copy_slices_of_the_read_buffer() {
    let mut buf = BytesMut::from(&multibulk(&[b"SET", b"key", b"value"])[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let command = parse_command(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    for arg in &command {
        assert!(
            range.contains(&(arg.as_ptr() as usize)),
            "{arg:?} was copied"
        );
    }
}

#[test]
fn binary_safe_values_round_trip() {
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n$5\r\n*1\r\n").collect();
    let input = multibulk(&[b"SET", b"k\r\n", &value]);
    let command = parse_one(&input).unwrap().unwrap();
    assert_eq!(command[1], &b"k\r\n"[..]);
    assert_eq!(command[2], value);

    // Back out as a reply, and in again through a client's eyes.
    let reply = encoded(&Reply::Bulk(command[2].clone()), Protocol::Resp2);
    let mut expected = format!("${}\r\n", value.len()).into_bytes();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(reply, expected);
}

#[test]
fn empty_array_and_null_array_are_ignored() {
    assert_eq!(parse_one(b"*0\r\n"), Ok(Some(vec![])));
    assert_eq!(parse_one(b"*-1\r\n"), Ok(Some(vec![])));
    assert_eq!(parse_one(b"\r\n"), Ok(Some(vec![])));
    assert_eq!(parse_one(b"   \t \n"), Ok(Some(vec![])));
    let (commands, error) = feed_all(b"*0\r\n*1\r\n$4\r\nPING\r\n", &Limits::default());
    assert_eq!(error, None);
    assert_eq!(commands, vec![vec![], args(&["PING"])]);
}

// ---------------------------------------------------------------------------
// Inline commands
// ---------------------------------------------------------------------------

#[test]
fn inline_commands_split_on_spaces_and_tabs() {
    assert_eq!(parse_one(b"PING\r\n"), Ok(Some(args(&["PING"]))));
    assert_eq!(
        parse_one(b"SET  k\tv \r\n"),
        Ok(Some(args(&["SET", "k", "v"])))
    );
    // A bare "\n" ends the line too (netcat, scripts).
    assert_eq!(parse_one(b"GET k\nGET j\n"), Ok(Some(args(&["GET", "k"]))));
    assert_eq!(parse_one(b"GET k"), Ok(None));
    assert_eq!(parse_one(b"GET k\r"), Ok(None));
}

#[test]
fn inline_quotes_and_escapes_follow_redis_cli() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"SET k \"a b\"\r\n", &[b"SET", b"k", b"a b"]),
        (
            b"SET k \"\\x41\\n\\t\\\"\\\\\"\r\n",
            &[b"SET", b"k", b"A\n\t\"\\"],
        ),
        (b"SET k 'it\\'s'\r\n", &[b"SET", b"k", b"it's"]),
        (
            b"SET k 'no \\n escapes'\r\n",
            &[b"SET", b"k", b"no \\n escapes"],
        ),
        (b"SET k \"\"\r\n", &[b"SET", b"k", b""]),
        (b"SET k pre\"fix\"\r\n", &[b"SET", b"k", b"prefix"]),
        (b"SET k \"\\xZZ\"\r\n", &[b"SET", b"k", b"xZZ"]),
    ];
    for (line, expected) in cases {
        let expected: Vec<Bytes> = expected.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        assert_eq!(
            parse_one(line),
            Ok(Some(expected)),
            "{}",
            line.escape_ascii()
        );
    }
}

#[test]
fn inline_unbalanced_quotes_are_a_protocol_error() {
    let unbalanced = protocol_error("unbalanced quotes in request");
    for line in [
        &b"SET k \"open\r\n"[..],
        b"SET k 'open\r\n",
        b"SET k \"a\"b\r\n",
        b"SET k \"a\\\"\r\n",
    ] {
        assert_eq!(
            parse_one(line),
            Err(unbalanced.clone()),
            "{}",
            line.escape_ascii()
        );
    }
}

#[test]
fn too_long_inline_line_is_refused_without_waiting_for_its_newline() {
    let limits = Limits {
        max_inline_len: 16,
        ..Limits::default()
    };
    let too_big = protocol_error("too big inline request");
    let at_limit = [b"GET ".as_slice(), &[b'k'; 12], b"\n"].concat();
    assert_eq!(
        parse_command(&mut BytesMut::from(&at_limit[..]), &limits).map(|c| c.is_some()),
        Ok(true)
    );
    let over = [b"GET ".as_slice(), &[b'k'; 13]].concat();
    assert_eq!(
        parse_command(&mut BytesMut::from(&over[..]), &limits),
        Err(too_big.clone())
    );
    let over_with_newline = [over.as_slice(), b"\n"].concat();
    assert_eq!(
        feed_all(&over_with_newline, &limits).1,
        Some(too_big.clone())
    );
    assert_eq!(feed_bytewise(&over_with_newline, &limits).1, Some(too_big));
}

// ---------------------------------------------------------------------------
// Limits and malformed input
// ---------------------------------------------------------------------------

#[test]
fn default_limits_match_the_documented_values() {
    let limits = Limits::default();
    assert_eq!(limits.max_bulk_len, 8 * 1024 * 1024);
    assert_eq!(limits.max_args, 1024 * 1024);
    assert_eq!(limits.max_inline_len, 64 * 1024);
}

#[test]
fn huge_declared_bulk_length_is_refused_before_the_data_arrives() {
    let invalid = Err(protocol_error("invalid bulk length"));
    // Complete header, no data yet.
    assert_eq!(parse_one(b"*2\r\n$3\r\nSET\r\n$99999999999\r\n"), invalid);
    // Not even the header's CRLF: the digits alone already exceed the limit.
    assert_eq!(parse_one(b"*2\r\n$3\r\nSET\r\n$99999999999"), invalid);
    assert_eq!(parse_one(b"*1\r\n$8388609"), invalid);
    // The limit itself is fine: we wait for the data.
    assert_eq!(parse_one(b"*1\r\n$8388608\r\n"), Ok(None));
    let small = Limits {
        max_bulk_len: 5,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&b"*1\r\n$6\r\n"[..]);
    assert_eq!(parse_command(&mut buf, &small), invalid);
    let mut buf = BytesMut::from(&b"*1\r\n$5\r\nhello\r\n"[..]);
    assert_eq!(parse_command(&mut buf, &small), Ok(Some(args(&["hello"]))));
}

#[test]
fn huge_multibulk_count_is_refused_immediately() {
    let invalid = Err(protocol_error("invalid multibulk length"));
    assert_eq!(parse_one(b"*1048577\r\n"), invalid);
    assert_eq!(parse_one(b"*99999999999999999999999"), invalid);
    assert_eq!(parse_one(b"*1048576\r\n"), Ok(None));
    let few = Limits {
        max_args: 2,
        ..Limits::default()
    };
    assert_eq!(
        parse_command(&mut BytesMut::from(&b"*3"[..]), &few),
        invalid
    );
}

#[test]
fn invalid_lengths_are_refused_with_redis_wording() {
    let multibulk = Err(protocol_error("invalid multibulk length"));
    for input in [
        &b"*x\r\n"[..],
        b"*-2\r\n",
        b"*+1\r\n",
        b"*01\r\n",
        b"* 1\r\n",
        b"*\r\n",
        b"*1\rX",
    ] {
        assert_eq!(parse_one(input), multibulk, "{}", input.escape_ascii());
    }
    let bulk = Err(protocol_error("invalid bulk length"));
    for input in [
        &b"*1\r\n$x\r\n"[..],
        b"*1\r\n$-1\r\n",
        b"*1\r\n$01\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$3\rX",
    ] {
        assert_eq!(parse_one(input), bulk, "{}", input.escape_ascii());
    }
}

#[test]
fn over_long_header_lines_are_refused_without_buffering() {
    // Redis waits for 64 KiB; we refuse as soon as no number can come of it.
    let digits = vec![b'1'; 64 * 1024];
    let input = [b"*".as_slice(), &digits].concat();
    assert_eq!(
        parse_one(&input),
        Err(protocol_error("invalid multibulk length"))
    );
    let input = [b"*1\r\n$".as_slice(), &digits].concat();
    assert_eq!(
        parse_one(&input),
        Err(protocol_error("invalid bulk length"))
    );
}

#[test]
fn an_argument_not_starting_with_dollar_is_refused() {
    assert_eq!(
        parse_one(b"*1\r\n:1\r\n"),
        Err(protocol_error("expected '$', got ':'"))
    );
    assert_eq!(
        parse_one(b"*1\r\n\x01"),
        Err(protocol_error("expected '$', got '\\x01'"))
    );
}

#[test]
fn bulk_data_not_followed_by_crlf_is_refused() {
    let missing = Err(protocol_error("expected CRLF after bulk data"));
    assert_eq!(parse_one(b"*1\r\n$3\r\nGETXX"), missing);
    assert_eq!(parse_one(b"*1\r\n$3\r\nGET\n\r"), missing);
    assert_eq!(parse_one(b"*1\r\n$3\r\nGET\r"), Ok(None));
}

#[test]
fn protocol_errors_display_as_redis_replies_them() {
    assert_eq!(
        protocol_error("invalid bulk length").to_string(),
        "Protocol error: invalid bulk length"
    );
}

#[test]
fn garbage_bytes_give_a_protocol_error_never_a_panic() {
    let garbage: &[&[u8]] = &[
        b"*\xff\xfe\r\n",
        b"*2\r\n$3\r\nGET\r\n*1\r\n",
        b"*1\r\n$-9223372036854775808\r\n",
        b"*-9223372036854775808\r\n",
        b"*9223372036854775807\r\n",
        b"*1\r\n$18446744073709551615\r\n",
        b"*1\r\n$9223372036854775807\r\n",
        b"\"\r\n",
        b"'\r\n",
    ];
    for input in garbage {
        let all = feed_all(input, &Limits::default());
        assert!(
            all.1.is_some(),
            "{} parsed as {:?}",
            input.escape_ascii(),
            all.0
        );
        assert_eq!(feed_bytewise(input, &Limits::default()), all);
    }
    // Limits near usize::MAX must not overflow either.
    let unlimited = Limits {
        max_bulk_len: usize::MAX,
        max_args: usize::MAX,
        max_inline_len: usize::MAX,
    };
    for input in garbage {
        let _ = feed_all(input, &unlimited);
    }
    assert_eq!(
        feed_all(b"*1\r\n$9223372036854775807\r\nab", &unlimited).1,
        None
    );
    assert_eq!(feed_all(b"PING\r\n", &unlimited).0, vec![args(&["PING"])]);
}

#[test]
fn fuzzed_input_never_panics_and_does_not_depend_on_read_boundaries() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let tight = Limits {
        max_bulk_len: 40,
        max_args: 6,
        max_inline_len: 48,
    };
    let valid = mixed_pipeline();
    let (mut parsed_some, mut refused) = (0, 0);
    for round in 0..20_000 {
        // Half random byte strings, half mutations of a valid pipeline.
        let input = if round % 2 == 0 {
            (0..rng.below(80)).map(|_| rng.resp_byte()).collect()
        } else {
            mutate(&valid, &mut rng)
        };
        let limits = if round % 3 == 0 {
            tight
        } else {
            Limits::default()
        };
        let all = feed_all(&input, &limits);
        parsed_some += usize::from(!all.0.is_empty());
        refused += usize::from(all.1.is_some());
        let cut = rng.below(input.len() + 1);
        let cut2 = rng.below(input.len() + 1).max(cut);
        let pieces = [&input[..cut], &input[cut..cut2], &input[cut2..]];
        assert_eq!(
            feed(&pieces, &limits),
            all,
            "input {}",
            input.escape_ascii()
        );
        if round % 50 == 0 {
            assert_eq!(
                feed_bytewise(&input, &limits),
                all,
                "input {}",
                input.escape_ascii()
            );
        }
    }
    // The generator must reach both outcomes often, or it tests little.
    assert!(
        parsed_some > 5_000 && refused > 5_000,
        "{parsed_some} parsed, {refused} refused"
    );
}

/// A few random edits: flip, insert, delete, or truncate.
fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut input = valid.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(4) {
            0 if at < input.len() => input[at] = rng.resp_byte(),
            1 => input.insert(at, rng.resp_byte()),
            2 if at < input.len() => {
                input.remove(at);
            }
            _ => input.truncate(at),
        }
    }
    input
}

// ---------------------------------------------------------------------------
// Reply encoding
// ---------------------------------------------------------------------------

/// Every variant, with its exact RESP2 and RESP3 bytes.
#[test]
fn every_reply_encodes_exactly_in_resp2_and_resp3() {
    let cases: Vec<(Reply, &[u8], &[u8])> = vec![
        (Reply::ok(), b"+OK\r\n", b"+OK\r\n"),
        (Reply::Simple("PONG".into()), b"+PONG\r\n", b"+PONG\r\n"),
        (
            Reply::Error("CLUSTERDOWN no leader".into()),
            b"-CLUSTERDOWN no leader\r\n",
            b"-CLUSTERDOWN no leader\r\n",
        ),
        (Reply::Integer(42), b":42\r\n", b":42\r\n"),
        (Reply::Integer(0), b":0\r\n", b":0\r\n"),
        (
            Reply::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        ),
        (
            Reply::Bulk(Bytes::from("hello")),
            b"$5\r\nhello\r\n",
            b"$5\r\nhello\r\n",
        ),
        (Reply::Bulk(Bytes::new()), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (Reply::Nil, b"$-1\r\n", b"_\r\n"),
        (Reply::NilArray, b"*-1\r\n", b"_\r\n"),
        (Reply::Array(vec![]), b"*0\r\n", b"*0\r\n"),
        (
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Nil,
                Reply::Bulk(Bytes::from("a")),
            ]),
            b"*3\r\n:1\r\n$-1\r\n$1\r\na\r\n",
            b"*3\r\n:1\r\n_\r\n$1\r\na\r\n",
        ),
        (
            Reply::Map(vec![
                (
                    Reply::Simple("server".into()),
                    Reply::Simple("raftkv".into()),
                ),
                (Reply::Simple("proto".into()), Reply::Integer(3)),
            ]),
            b"*4\r\n+server\r\n+raftkv\r\n+proto\r\n:3\r\n",
            b"%2\r\n+server\r\n+raftkv\r\n+proto\r\n:3\r\n",
        ),
        (
            Reply::Set(vec![
                Reply::Bulk(Bytes::from("x")),
                Reply::Bulk(Bytes::from("y")),
            ]),
            b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
            b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n",
        ),
        (Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Reply::Double(3.0), b"$1\r\n3\r\n", b",3\r\n"),
        (Reply::Double(-0.25), b"$5\r\n-0.25\r\n", b",-0.25\r\n"),
        (Reply::Double(1e300), b"$5\r\n1e300\r\n", b",1e300\r\n"),
        (Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
        (
            Reply::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        ),
        (Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
        (Reply::Bool(true), b":1\r\n", b"#t\r\n"),
        (Reply::Bool(false), b":0\r\n", b"#f\r\n"),
        (
            Reply::Verbatim {
                format: *b"txt",
                text: Bytes::from("Some string"),
            },
            b"$11\r\nSome string\r\n",
            b"=15\r\ntxt:Some string\r\n",
        ),
    ];
    for (reply, resp2, resp3) in &cases {
        assert_eq!(encoded(reply, Protocol::Resp2), *resp2, "RESP2 {reply:?}");
        assert_eq!(encoded(reply, Protocol::Resp3), *resp3, "RESP3 {reply:?}");
    }
}

#[test]
fn doubles_read_back_as_the_same_value() {
    for value in [
        0.1,
        1.0 / 3.0,
        -2.5e-8,
        123456789.125,
        1e16,
        1e17,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let bytes = encoded(&Reply::Double(value), Protocol::Resp3);
        let text = std::str::from_utf8(&bytes[1..bytes.len() - 2]).unwrap();
        assert_eq!(text.parse::<f64>().unwrap(), value, "{text}");
    }
}

#[test]
fn reply_error_adds_the_err_code_once() {
    assert_eq!(
        Reply::error("unknown command 'FOO'"),
        Reply::Error("ERR unknown command 'FOO'".into())
    );
    assert_eq!(
        Reply::error("ERR syntax error"),
        Reply::Error("ERR syntax error".into())
    );
    assert_eq!(
        encoded(&Reply::error("syntax error"), Protocol::Resp3),
        b"-ERR syntax error\r\n"
    );
}

#[test]
fn line_breaks_in_simple_strings_and_errors_cannot_break_framing() {
    let reply = Reply::error("unknown command 'A\r\n+OK'");
    assert_eq!(
        encoded(&reply, Protocol::Resp2),
        b"-ERR unknown command 'A  +OK'\r\n"
    );
    assert_eq!(
        encoded(&Reply::Simple("a\nb".into()), Protocol::Resp2),
        b"+a b\r\n"
    );
}

#[test]
fn encoding_appends_to_what_is_already_in_the_buffer() {
    let mut out = BytesMut::from(&b"+first\r\n"[..]);
    encode(&Reply::Integer(7), Protocol::Resp2, &mut out);
    assert_eq!(&out[..], b"+first\r\n:7\r\n");
}
