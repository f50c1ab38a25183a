#!/usr/bin/env python3
"""Helpers of bench/soak.sh, the soak test of a Snorky node.

  soak.py churn URL --stats FILE     connection churn until SIGTERM/SIGINT
  soak.py sample --pid P --csv FILE  RSS of P's process tree (and --extra-pid) every few seconds
  soak.py children PID               PID's child processes
  soak.py summarize ...              the table, the checks, docs-ready Markdown

`churn` keeps --concurrency loops running. Each loop connects, subscribes to one of
--channels churn channels, holds the connection for a random time while a publisher
connection publishes on those channels, then leaves one of three ways: unsubscribe and
close, plain close, or dropping the TCP connection without a close frame (a vanished
client). Needs the `websockets` package (pip install websockets).
"""

import argparse
import asyncio
import csv
import json
import os
import random
import signal
import sys
import time


# --------------------------------------------------------------------------- churn

def request(command, params, call_id):
    return json.dumps({"service": "pubsub", "message": {"command": command, "params": params, "callId": call_id}})


async def await_reply(ws, call_id, counters):
    """Reads frames until the reply to call_id; counts the notifications read meanwhile."""
    while True:
        frame = json.loads(await ws.recv())
        message = frame.get("message", {})
        if message.get("type") == "message":
            counters["notifications"] += 1
            continue
        if message.get("callId") != call_id:
            continue
        if message.get("type") != "response":
            raise RuntimeError(f"call {call_id}: {message}")
        return


def count_error(errors, stage, error):
    key = f"{stage}: {type(error).__name__}: {error}"[:160]
    errors[key] = errors.get(key, 0) + 1


LEAVE_WAYS = ("mix", "unsubscribe", "close", "drop")


async def churn_loop(url, channels, max_hold, leave, counters, errors, stop, rng):
    from websockets.asyncio.client import connect

    while not stop.is_set():
        channel = f"churn-{rng.randrange(channels)}"
        try:
            ws = await connect(url, open_timeout=15, close_timeout=5, ping_interval=None, max_queue=None)
        except Exception as error:  # noqa: BLE001 - every failure is counted and reported
            count_error(errors, "connect", error)
            counters["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        counters["connected"] += 1
        way = rng.random() if leave == "mix" else {"unsubscribe": 0.0, "drop": 0.3, "close": 0.9}[leave]
        try:
            await ws.send(request("subscribe", {"channel": channel}, 1))
            await asyncio.wait_for(await_reply(ws, 1, counters), 15)
            counters["subscribed"] += 1
            deadline = time.monotonic() + rng.uniform(0, max_hold)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(ws.recv(), left)
                    counters["notifications"] += 1
                except TimeoutError:
                    break
            if way < 0.25:
                await ws.send(request("unsubscribe", {"channel": channel}, 2))
                await asyncio.wait_for(await_reply(ws, 2, counters), 15)
                await ws.close()
                counters["closed_after_unsubscribe"] += 1
            elif way < 0.5:
                ws.transport.abort()
                counters["dropped"] += 1
            else:
                await ws.close()
                counters["closed"] += 1
        except Exception as error:  # noqa: BLE001
            count_error(errors, "session", error)
            counters["session_errors"] += 1
            ws.transport.abort()


async def churn_publisher(url, channels, rate, counters, errors, stop):
    """Publishes on the churn channels from one connection, so churning subscribers
    receive (and are torn down in the middle of receiving) real traffic."""
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=15, ping_interval=None, max_queue=None) as ws:
        call_id = 0
        interval = 1.0 / rate
        next_time = time.monotonic()
        while not stop.is_set():
            call_id += 1
            channel = f"churn-{call_id % channels}"
            try:
                await ws.send(request("publish", {"channel": channel, "message": {"n": call_id}}, call_id))
                await asyncio.wait_for(await_reply(ws, call_id, counters), 15)
                counters["churn_publications"] += 1
            except Exception as error:  # noqa: BLE001
                count_error(errors, "publish", error)
                counters["publish_errors"] += 1
                return
            next_time += interval
            await asyncio.sleep(max(0, next_time - time.monotonic()))


async def churn(args):
    counters = dict.fromkeys(
        ["connected", "subscribed", "closed", "closed_after_unsubscribe", "dropped", "notifications",
         "churn_publications", "connect_errors", "session_errors", "publish_errors"], 0)
    errors = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    started = time.monotonic()
    rng = random.Random(args.seed)
    tasks = [asyncio.create_task(churn_loop(args.url, args.channels, args.max_hold, args.leave, counters, errors, stop,
                                            random.Random(rng.random()))) for _ in range(args.concurrency)]
    tasks.append(asyncio.create_task(churn_publisher(args.url, args.channels, args.publish_rate, counters, errors, stop)))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.monotonic() - started
    report = {"seconds": round(seconds, 1), "connectionsPerSecond": round(counters["connected"] / seconds, 1),
              **counters, "errors": errors}
    with open(args.stats, "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report), file=sys.stderr)


# --------------------------------------------------------------------------- sample

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def role_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            argv = file.read().split(b"\0")
    except OSError:
        return None
    name = os.path.basename(argv[0].decode(errors="replace"))
    if name.startswith("redis-server"):
        return "redis"
    if len(argv) > 1 and argv[1] == b"serve":
        return "supervisor"
    if len(argv) > 1 and argv[1] == b"worker":
        return "worker"
    return name


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the ppid follows the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def sample(args):
    stop = False

    def finish(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    started = time.monotonic()
    with open(args.csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["elapsed_s", "pid", "role", "rss_kib"])
        next_time = started
        while not stop:
            elapsed = round(time.monotonic() - started, 1)
            pids = [(args.pid, None)] + [(child, None) for child in children(args.pid)] + [(p, "redis") for p in args.extra_pid]
            for pid, role in pids:
                rss = rss_kib(pid)
                role = role or role_of(pid)
                if rss is not None and role is not None:
                    writer.writerow([elapsed, pid, role, rss])
            file.flush()
            next_time += args.interval
            while not stop and time.monotonic() < next_time:
                time.sleep(min(0.2, max(0, next_time - time.monotonic())))


# --------------------------------------------------------------------------- summarize

def mib(kib):
    return f"{kib / 1024:.1f}"


def summarize(args):
    samples = {}  # (role, pid) -> [(elapsed, rss)]
    with open(args.csv) as file:
        for row in csv.DictReader(file):
            samples.setdefault((row["role"], int(row["pid"])), []).append((float(row["elapsed_s"]), int(row["rss_kib"])))
    bench = json.load(open(args.bench)) if os.path.exists(args.bench) else None
    churn_stats = json.load(open(args.churn)) if os.path.exists(args.churn) else None

    order = {"supervisor": 0, "worker": 1, "redis": 2}
    processes = sorted(samples, key=lambda key: (order.get(key[0], 3), samples[key][0][0], key[1]))
    names = {}
    workers = 0
    for role, pid in processes:
        if role == "worker":
            workers += 1
            names[(role, pid)] = f"worker {workers} (pid {pid})"
        else:
            names[(role, pid)] = f"{role} (pid {pid})"

    failures = []
    end = max(point[0] for series in samples.values() for point in series)
    lines = []
    lines.append("| elapsed | " + " | ".join(f"{names[key]} RSS MiB" for key in processes) + " |")
    lines.append("|---|" + "---|" * len(processes))
    times = sorted({point[0] for series in samples.values() for point in series})
    shown = []
    for moment in times:
        if not shown or moment - shown[-1] >= args.table_every or moment == times[-1]:
            shown.append(moment)
    for moment in shown:
        cells = []
        for key in processes:
            values = [rss for elapsed, rss in samples[key] if elapsed == moment]
            cells.append(mib(values[0]) if values else "–")
        lines.append(f"| {moment / 60:.1f} min | " + " | ".join(cells) + " |")

    growth_lines = []
    for key in processes:
        series = samples[key]
        if key[0] in ("worker", "supervisor") and series[-1][0] < end - 2 * args.interval:
            failures.append(f"{names[key]} disappeared at {series[-1][0]:.0f} s (restarted or crashed)")
        if key[0] in ("worker", "supervisor") and series[0][0] > 2 * args.interval:
            failures.append(f"{names[key]} appeared at {series[0][0]:.0f} s (a restarted worker)")
        first, peak, last = series[0][1], max(rss for _, rss in series), series[-1][1]
        # Warm-up (allocator pools, buffers, channel tables) happens early; a leak keeps
        # growing. Compare the second half's start with the end.
        middle = min(series, key=lambda point: abs(point[0] - series[-1][0] / 2))[1]
        growth = last - middle
        growth_lines.append(f"| {names[key]} | {mib(first)} | {mib(middle)} | {mib(last)} | {mib(peak)} | {growth / 1024:+.1f} |")
        if key[0] in ("worker", "supervisor") and growth > args.max_growth_kib:
            failures.append(f"{names[key]} grew {growth / 1024:.1f} MiB in the second half (limit {args.max_growth_kib / 1024:.1f} MiB)")

    out = []
    out.append("RSS over time (MiB):")
    out.append("")
    out.extend(lines)
    out.append("")
    out.append("| process | first | middle | end | peak | end − middle |")
    out.append("|---|---|---|---|---|---|")
    out.extend(growth_lines)
    out.append("")
    if bench:
        delivery, publishing, connections = bench.get("delivery", {}), bench.get("publishing", {}), bench.get("connections", {})
        lost, out_of_order, disconnects = delivery.get("lost"), delivery.get("outOfOrder", 0), delivery.get("disconnects", 0)
        out.append(f"Steady subscribers: {connections.get('ready')} connections, {publishing.get('sent')} publications "
                   f"({publishing.get('achievedRate', 0):.0f}/s), {delivery.get('delivered')} deliveries of "
                   f"{delivery.get('expected')} expected: lost {lost}, out of order {out_of_order}, "
                   f"disconnects {disconnects}, publish errors {publishing.get('failed', 0)}; latency p50 "
                   f"{bench.get('latency', {}).get('p50Micros')} µs, p99 {bench.get('latency', {}).get('p99Micros')} µs, "
                   f"max {bench.get('latency', {}).get('maxMicros')} µs.")
        if lost != 0:
            failures.append(f"steady subscribers lost {lost} deliveries")
        if out_of_order or disconnects:
            failures.append(f"steady subscribers saw {out_of_order} out-of-order deliveries and {disconnects} disconnects")
        if publishing.get("failed", 0):
            failures.append(f"{publishing.get('failed')} steady publications failed")
    else:
        failures.append("no snorky-bench report")
    if churn_stats:
        out.append(f"Churn: {churn_stats['connected']} connections in {churn_stats['seconds']:.0f} s "
                   f"({churn_stats['connectionsPerSecond']}/s): {churn_stats['subscribed']} subscribed, "
                   f"{churn_stats['closed']} closed, {churn_stats['closed_after_unsubscribe']} unsubscribed then closed, "
                   f"{churn_stats['dropped']} dropped without a close frame; {churn_stats['notifications']} notifications "
                   f"received from {churn_stats['churn_publications']} churn publications; errors: connect "
                   f"{churn_stats['connect_errors']}, session {churn_stats['session_errors']}, publish {churn_stats['publish_errors']}.")
        for message, count in churn_stats.get("errors", {}).items():
            out.append(f"  {count} × {message}")
        if churn_stats["connect_errors"] or churn_stats["session_errors"] or churn_stats["publish_errors"]:
            failures.append("churn clients saw errors")
        if churn_stats["connected"] == 0:
            failures.append("no churn connection was made")
    else:
        failures.append("no churn report")
    out.append("")
    out.append("Result: " + ("PASS" if not failures else "FAIL"))
    for failure in failures:
        out.append(f"  - {failure}")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(text + "\n")
    return 0 if not failures else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    churn_parser = commands.add_parser("churn", help="connection churn until SIGTERM")
    churn_parser.add_argument("url")
    churn_parser.add_argument("--stats", required=True, help="JSON report written on exit")
    churn_parser.add_argument("--concurrency", type=int, default=20, help="connections churning at once")
    churn_parser.add_argument("--max-hold", type=float, default=1.0, help="longest time a churn connection stays, s")
    churn_parser.add_argument("--channels", type=int, default=50, help="churn channels")
    churn_parser.add_argument("--publish-rate", type=float, default=50, help="publications/s on the churn channels")
    churn_parser.add_argument("--leave", choices=LEAVE_WAYS, default="mix",
                              help="how a churn connection ends: a random mix (1/4 unsubscribe and close, "
                                   "1/4 drop the TCP connection, 1/2 close), or always one way")
    churn_parser.add_argument("--seed", type=int, default=1)

    sample_parser = commands.add_parser("sample", help="RSS of a process tree every --interval s until SIGTERM")
    sample_parser.add_argument("--pid", type=int, required=True, help="the supervisor")
    sample_parser.add_argument("--extra-pid", type=int, action="append", default=[], help="also sample (e.g. redis)")
    sample_parser.add_argument("--interval", type=float, default=5)
    sample_parser.add_argument("--csv", required=True)

    children_parser = commands.add_parser("children", help="print a process's child pids")
    children_parser.add_argument("pid", type=int)

    summary_parser = commands.add_parser("summarize", help="table and checks")
    summary_parser.add_argument("--csv", required=True)
    summary_parser.add_argument("--bench", required=True, help="snorky-bench JSON report")
    summary_parser.add_argument("--churn", required=True, help="churn JSON report")
    summary_parser.add_argument("--interval", type=float, default=5)
    summary_parser.add_argument("--table-every", type=float, default=30, help="seconds between table rows")
    summary_parser.add_argument("--max-growth-kib", type=int, default=1024,
                                help="largest RSS growth of a Snorky process over the second half of the run")
    summary_parser.add_argument("--markdown", help="also write the summary here")

    args = parser.parse_args()
    if args.command == "churn":
        asyncio.run(churn(args))
    elif args.command == "sample":
        sample(args)
    elif args.command == "children":
        print(" ".join(str(pid) for pid in sorted(children(args.pid))))
    else:
        sys.exit(summarize(args))


if __name__ == "__main__":
    main()
