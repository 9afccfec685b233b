"""Load test of ``bglab serve``: N concurrent clients on loopback against 1 and 2 worker processes, in one run.

For each ``--workers`` value it starts ``bglab serve`` on a free loopback port, sends ``--requests`` requests
(or stops at ``--duration`` seconds, whichever comes first) from ``--clients`` threads with keep-alive
connections, and reports throughput, p50 / p95 / p99 latency, errors (any non-200), and the resident memory
of the server's process tree before any request, after the first 100 and at the end (after 2000 by default).

Targets (printed as PASS / FAIL): 0 errors; memory at the end within 10 % of after 100; 2 workers >= 1.8x
the throughput of 1 worker. The machine must have at least two free cores for the last one to mean anything.

    .venv/bin/python bench/bench_server.py                       # the full run (several minutes)
    .venv/bin/python bench/bench_server.py --requests 50 --clients 2 --backend chroma   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


# --------------------------------------------------------------------------------------------------------------
# memory of a process tree (psutil when installed, else /proc)


def _children_proc(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _rss_proc(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (uvicorn's supervisor and its workers)."""
    try:
        import psutil

        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total
    except ImportError:
        return sum(_rss_proc(p) for p in _children_proc(pid))
    except Exception:  # noqa: BLE001 - the process is gone
        return 0


# --------------------------------------------------------------------------------------------------------------
# requests


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def pick_images(backend: str, n: int) -> list[Path]:
    """Real photos: green-screen webcam PNGs for chroma, varied sxsw JPEGs for the others."""
    if backend == "chroma":
        roots = [SHARED / "rps" / "webcam", REPO / "bglab" / "sample_data" / "webcam"]
        pattern = "*.png"
    else:
        roots = [SHARED / "rps" / "sxsw", REPO / "bglab" / "sample_data" / "sxsw"]
        pattern = "*.jpg"
    for root in roots:
        files = sorted(root.rglob(pattern))
        if files:
            step = max(1, len(files) // n)
            return files[::step][:n]
    sys.exit(f"no images found under {roots}")


@dataclass
class RunResult:
    workers: int
    backend: str
    clients: int
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    throughput: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_100_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_end_at: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, workers: int, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bglab.cli.app", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--backend", args.backend, "--threads", str(args.threads),
           "--concurrency", str(args.concurrency), "--queue", str(args.clients * 2), "--log-level", "warning"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bglab serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"bglab serve did not start in 60 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_one(args: argparse.Namespace, workers: int, bodies: list[tuple[bytes, str]], log_dir: Path) -> RunResult:
    port = _free_port()
    proc = start_server(args, workers, port, log_dir / f"serve_w{workers}.log")
    res = RunResult(workers=workers, backend=args.backend, clients=args.clients)
    try:
        time.sleep(1.0)
        res.rss_before_mb = tree_rss(proc.pid) / 2**20
        # warm-up: every worker loads its model (not counted)
        warm_conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(workers * 2)]
        threads = [threading.Thread(target=_post, args=(c, args.endpoint, bodies[0])) for c in warm_conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in warm_conns:
            c.close()

        lock = threading.Lock()
        latencies: list[float] = []
        state = {"sent": 0, "done": 0}
        stop = threading.Event()
        mem_100 = threading.Event()
        t_start = time.perf_counter()
        deadline = t_start + args.duration

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
            k = i
            while not stop.is_set():
                with lock:
                    if state["sent"] >= args.requests or time.perf_counter() > deadline:
                        break
                    state["sent"] += 1
                body = bodies[k % len(bodies)]
                k += args.clients
                t0 = time.perf_counter()
                status, info = _post(conn, args.endpoint, body)
                dt = time.perf_counter() - t0
                with lock:
                    state["done"] += 1
                    if status == 200:
                        latencies.append(dt)
                    else:
                        res.errors += 1
                        if len(res.error_samples) < 5:
                            res.error_samples.append(f"{status}: {info[:200]}")
                        if status == 0:  # connection broke: open a new one
                            conn.close()
                            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
                    if state["done"] >= 100 and not mem_100.is_set():
                        mem_100.set()
            conn.close()

        def monitor() -> None:  # samples the memory once 100 requests are done (never, in a shorter run)
            while not stop.is_set():
                if mem_100.wait(0.1):
                    res.rss_after_100_mb = tree_rss(proc.pid) / 2**20
                    return

        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        pool = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        res.seconds = time.perf_counter() - t_start
        stop.set()
        mon.join(5)
        res.rss_end_mb = tree_rss(proc.pid) / 2**20
        res.rss_end_at = state["done"]
        res.requests = state["done"]
        res.throughput = len(latencies) / res.seconds if res.seconds else 0.0
        if latencies:
            p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
            res.p50_ms, res.p95_ms, res.p99_ms = float(p50), float(p95), float(p99)
    finally:
        stop_server(proc)
    return res


def _post(conn: http.client.HTTPConnection, endpoint: str, body: tuple[bytes, str]) -> tuple[int, str]:
    data, ctype = body
    try:
        conn.request("POST", endpoint, body=data, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status == 200 and not payload:
            return -1, "empty body"
        return resp.status, "" if resp.status == 200 else payload.decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return 0, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--requests", type=int, default=2000, help="requests per worker count (upper bound)")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per worker count (upper bound)")
    ap.add_argument("--backend", default=None, help="segmenter; default unet if its model exists, else chroma")
    ap.add_argument("--endpoint", default="/api/remove", choices=["/api/remove", "/api/segment"])
    ap.add_argument("--mode", default="cutout", help="mode for /api/remove")
    ap.add_argument("--images", type=int, default=24, help="distinct photos to cycle through")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads per model session (1: measure process scaling, not intra-op threads)")
    ap.add_argument("--concurrency", type=int, default=1, help="images processed at once per worker")
    ap.add_argument("--timeout", type=float, default=120.0, help="client timeout per request (s)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "bench_server.json")
    args = ap.parse_args(argv)
    if args.backend is None:
        args.backend = "unet" if (REPO / "bglab" / "models" / "hand_unet.onnx").exists() else "chroma"

    images = pick_images(args.backend, args.images)
    fields = {"backend": args.backend} | ({"mode": args.mode} if args.endpoint == "/api/remove" else {})
    bodies = [multipart(fields, {"image": (p.name, p.read_bytes())}) for p in images]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"bench_server: backend {args.backend}, {args.endpoint} ({args.mode}), {len(images)} photos, "
          f"{args.clients} clients, <= {args.requests} requests / <= {args.duration:.0f} s per run, "
          f"{os.cpu_count()} CPUs", flush=True)

    results = []
    for w in args.workers:
        r = run_one(args, w, bodies, args.out.parent)
        results.append(r)
        print(f"workers={w}: {r.requests} requests in {r.seconds:.1f} s, {r.throughput:.2f} req/s, "
              f"p50 {r.p50_ms:.0f} ms, p95 {r.p95_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, errors {r.errors}; "
              f"RSS MiB before {r.rss_before_mb:.0f}, after 100 {r.rss_after_100_mb or float('nan'):.0f}, "
              f"after {r.rss_end_at} {r.rss_end_mb:.0f}", flush=True)
        for e in r.error_samples:
            print(f"  error sample: {e}")

    verdicts = []
    verdicts.append(("0 errors", all(r.errors == 0 for r in results),
                     ", ".join(f"w{r.workers}: {r.errors}" for r in results)))
    for r in results:
        if r.rss_after_100_mb and r.rss_end_at >= 2000:
            growth = r.rss_end_mb / r.rss_after_100_mb - 1
            verdicts.append((f"w{r.workers} memory after {r.rss_end_at} within 10 % of after 100",
                             growth <= 0.10, f"{growth * 100:+.1f} %"))
        else:
            verdicts.append((f"w{r.workers} memory after 2000", None, f"only {r.rss_end_at} requests: not judged"))
    by_w = {r.workers: r for r in results}
    if 1 in by_w and 2 in by_w and by_w[1].throughput:
        speedup = by_w[2].throughput / by_w[1].throughput
        verdicts.append(("2 workers >= 1.8x 1 worker", speedup >= 1.8, f"{speedup:.2f}x"))
    for name, ok, detail in verdicts:
        tag = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"{tag} {name}: {detail}")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
              "results": [asdict(r) for r in results],
              "verdicts": [{"target": n, "ok": ok, "detail": d} for n, ok, d in verdicts]}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
