#!/usr/bin/env python3
"""redis-py against raftkv nodes, with default settings (and RESP2/RESP3 chosen
explicitly too).

Usage: redis_py_client.py PORT [PORT ...]
Run by tests/cluster_process.rs; exits 0 on success, non-zero (with a
traceback or a FAIL line) otherwise. Needs `pip install redis`.
"""

import sys

import redis


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def b(value, decoded):
    """The reply redis-py gives for a stored string, by decode_responses."""
    return value if decoded else value.encode()


def exercise(r, tag, decoded=False):
    k = lambda name: f"py:{tag}:{name}"  # noqa: E731

    check(r.ping() is True, f"{tag}: PING")
    check(r.set(k("a"), "1") is True, f"{tag}: SET")
    got = r.get(k("a"))
    check(got == b("1", decoded), f"{tag}: GET returned {got!r}")
    check(r.get(k("missing")) is None, f"{tag}: GET of a missing key is None")

    check(r.incr(k("n")) == 1, f"{tag}: INCR")
    check(r.incr(k("n")) == 2, f"{tag}: INCR again")
    check(r.incrby(k("n"), 5) == 7, f"{tag}: INCRBY")

    check(r.mset({k("x"): "x", k("y"): "y"}) is True, f"{tag}: MSET")
    got = r.mget([k("x"), k("y"), k("missing")])
    check(got == [b("x", decoded), b("y", decoded), None], f"{tag}: MGET returned {got!r}")

    check(r.exists(k("a"), k("x"), k("missing")) == 2, f"{tag}: EXISTS")
    check(r.delete(k("x"), k("missing")) == 1, f"{tag}: DEL")
    check(r.exists(k("x")) == 0, f"{tag}: deleted")
    check(isinstance(r.dbsize(), int) and r.dbsize() >= 3, f"{tag}: DBSIZE")

    # Valkey-style conditional SET through the generic entry point.
    check(r.execute_command("SET", k("a"), "2", "IFEQ", "1") is True, f"{tag}: IFEQ match")
    check(r.execute_command("SET", k("a"), "3", "IFEQ", "1") is None, f"{tag}: IFEQ mismatch")
    check(r.get(k("a")) == b("2", decoded), f"{tag}: value after IFEQ")

    # Error replies become ResponseError and the connection stays usable.
    r.set(k("text"), "abc")
    try:
        r.incr(k("text"))
        check(False, f"{tag}: INCR of text must fail")
    except redis.ResponseError as e:
        check("not an integer" in str(e), f"{tag}: INCR error text {e}")
    check(r.ping() is True, f"{tag}: PING after an error")

    # A transaction: redis-py's default pipeline wraps it in MULTI/EXEC,
    # which raftkv applies as one log entry.
    p = r.pipeline(transaction=True)
    p.set(k("tx"), "1")
    p.incr(k("tx"))
    p.get(k("tx"))
    p.setnx(k("tx"), "9")
    got = p.execute()
    check(got == [True, 2, b("2", decoded), False], f"{tag}: transaction returned {got!r}")
    with r.pipeline() as p:
        p.set(k("tx2"), "a").append(k("tx2"), "b").strlen(k("tx2"))
        got = p.execute()
    check(got == [True, 2, 2], f"{tag}: default pipeline returned {got!r}")

    # A pipeline without MULTI/EXEC.
    p = r.pipeline(transaction=False)
    p.set(k("p"), "pv")
    p.get(k("p"))
    p.incr(k("n"))
    p.ping()
    p.get(k("missing"))
    got = p.execute()
    check(got == [True, b("pv", decoded), 8, True, None], f"{tag}: pipeline returned {got!r}")

    # A bigger pipeline keeps replies in order.
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(k(f"bulk{i}"), str(i))
        p.get(k(f"bulk{i}"))
    got = p.execute()
    want = []
    for i in range(100):
        want += [True, b(str(i), decoded)]
    check(got == want, f"{tag}: 200-command pipeline out of order")

    info = r.info("raft")
    check(info.get("role") in ("leader", "follower"), f"{tag}: INFO raft parsed as {info!r}")
    check(int(info.get("commit_index", -1)) > 0, f"{tag}: INFO raft commit_index")


def main():
    ports = [int(p) for p in sys.argv[1:]]
    if not ports:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(f"redis-py {redis.__version__}")
    for port in ports:
        opts = dict(port=port, socket_timeout=10, socket_connect_timeout=5)
        clients = [
            ("default", redis.Redis(**opts), False),
            ("resp2", redis.Redis(protocol=2, **opts), False),
            ("resp3", redis.Redis(protocol=3, **opts), False),
            ("decoded", redis.Redis(decode_responses=True, **opts), True),
            ("named", redis.Redis(client_name="raftkv-test", **opts), False),
            ("url", redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=10), False),
        ]
        for name, r, decoded in clients:
            exercise(r, f"{port}:{name}", decoded)
            r.close()
            print(f"port {port}: {name} client ok")
    print("all ok")


if __name__ == "__main__":
    main()
