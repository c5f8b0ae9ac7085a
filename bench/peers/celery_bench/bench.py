"""The Celery side of the peer benchmark.

Starts a prefork worker (`--concurrency`, default 2) on the broker and
database that bench/peers/run.sh started, waits until it runs tasks,
submits `--jobs` tasks as fast as one submitter can (apply_async in a loop,
one producer connection), polls celery_taskmeta until every one is stored
SUCCESS, and prints one JSON line: completed jobs/s = jobs / (first submit
to the moment the poll sees the last result stored), as loadgen measures
its side (it polls every 50 ms too). Bounded: `--max-seconds` for the
whole run, and the worker is stopped on every exit.

  PEERS_BROKER_URL=amqp://... PEERS_RESULT_URL=db+postgresql+psycopg2://... \\
    python -m celery_bench.bench --jobs 5000 --concurrency 2 --task true
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.05
STARTUP_SECONDS = 120
HERE = Path(__file__).resolve().parent


class BenchError(Exception):
    """A failure worth one clear line, not a traceback."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=5000, help="tasks to submit (default 5000)")
    p.add_argument("--concurrency", type=int, default=2, help="prefork processes (default 2)")
    p.add_argument("--task", choices=["true", "noop"], default="true",
                   help="true: fork/exec /bin/true (default); noop: an in-process no-op")
    p.add_argument("--prefetch-multiplier", type=int, default=4,
                   help="worker_prefetch_multiplier (Celery's default 4)")
    p.add_argument("--max-seconds", type=float, default=900,
                   help="give up after this many seconds (default 900)")
    p.add_argument("--log", type=Path, default=None,
                   help="the worker's log file (default: a temporary file)")
    args = p.parse_args()
    if args.jobs < 1 or args.concurrency < 1 or args.prefetch_multiplier < 0:
        p.error("--jobs and --concurrency must be at least 1, --prefetch-multiplier at least 0")
    return args


def pg_dsn():
    """The result backend's URL as a psycopg2 DSN (without `db+`)."""
    url = os.environ.get("PEERS_RESULT_URL", "")
    for prefix in ("db+postgresql+psycopg2://", "db+postgresql://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    raise BenchError("PEERS_RESULT_URL must be db+postgresql+psycopg2://... (bench/peers/run.sh sets it)")


class Worker:
    """A `celery worker` process group of our own, stopped on close."""

    def __init__(self, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        cmd = [
            sys.executable, "-m", "celery", "-A", "celery_bench.tasks", "worker",
            "--pool", "prefork", "--concurrency", str(args.concurrency),
            "--prefetch-multiplier", str(args.prefetch_multiplier),
            "--loglevel", "WARNING",
            # No worker-to-worker chatter: one worker, nothing to sync with.
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"peers-{os.getpid()}@%h",
        ]
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        self.proc = subprocess.Popen(cmd, cwd=HERE.parent, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def tail(self, lines=20):
        self.log.flush()
        try:
            text = Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check(self):
        if not self.alive():
            raise BenchError(f"the Celery worker exited with {self.proc.returncode}; "
                             f"its log ({self.log_path}) ends with:\n{self.tail()}")

    def stop(self):
        """Warm shutdown (SIGTERM), then SIGKILL after 30 s; the group is ours."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Pool processes that outlived their parent (killed worker).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def connect_db(deadline):
    import psycopg2

    last = None
    while time.monotonic() < deadline:
        try:
            conn = psycopg2.connect(pg_dsn(), connect_timeout=5)
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError as e:
            last = e
            time.sleep(0.5)
    raise BenchError(f"Postgres never accepted a connection: {last}")


def wait_broker(app, deadline):
    last = None
    while time.monotonic() < deadline:
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=5)
                return
        except Exception as e:  # kombu raises several kinds
            last = e
            time.sleep(0.5)
    raise BenchError(f"RabbitMQ never accepted a connection: {last}")


def counts(cur):
    cur.execute("SELECT count(*) FILTER (WHERE status = 'SUCCESS'),"
                "       count(*) FILTER (WHERE status = 'FAILURE') FROM celery_taskmeta")
    return cur.fetchone()


def first_failure(cur):
    cur.execute("SELECT task_id, traceback FROM celery_taskmeta WHERE status = 'FAILURE' LIMIT 1")
    row = cur.fetchone()
    return f"task {row[0]}: {row[1]}" if row else ""


def warm_up(task, worker, cur, n, deadline):
    """Runs n tasks so the worker is consuming, its pool processes hold
    their database connections and the tables exist; then empties the table."""
    for _ in range(n):
        task.apply_async()
    while True:
        worker.check()
        try:
            done, failed = counts(cur)
        except Exception:  # the table does not exist until the first result
            done, failed = 0, 0
        if failed:
            raise BenchError(f"a warm-up task failed: {first_failure(cur)}")
        if done >= n:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the worker ran {done} of {n} warm-up tasks in {STARTUP_SECONDS} s; "
                             f"its log ends with:\n{worker.tail()}")
        time.sleep(0.1)
    cur.execute("TRUNCATE celery_taskmeta")


def run(args):
    from celery_bench import tasks  # needs the environment, so imported here

    import celery
    import kombu
    import sqlalchemy

    task = tasks.run_true if args.task == "true" else tasks.noop
    started = time.monotonic()
    hard_deadline = started + args.max_seconds
    startup_deadline = min(hard_deadline, started + STARTUP_SECONDS)
    wait_broker(tasks.app, startup_deadline)
    db = connect_db(startup_deadline)
    cur = db.cursor()

    log_path = args.log or Path(os.environ.get("TMPDIR", "/tmp")) / f"peers-celery-worker-{os.getpid()}.log"
    worker = Worker(args, log_path)
    try:
        warm_up(task, worker, cur, 2 * args.concurrency, startup_deadline)

        t0 = time.monotonic()
        with tasks.app.producer_or_acquire() as producer:
            for _ in range(args.jobs):
                task.apply_async(producer=producer)
                if time.monotonic() > hard_deadline:
                    raise BenchError("submitting did not finish within --max-seconds")
        submitted = time.monotonic() - t0

        while True:
            done, failed = counts(cur)
            now = time.monotonic()
            if failed:
                raise BenchError(f"{failed} tasks failed, e.g. {first_failure(cur)}")
            if done >= args.jobs:
                break
            worker.check()
            if now > hard_deadline:
                raise BenchError(f"{args.jobs - done} of {args.jobs} tasks still unfinished "
                                 f"after --max-seconds {args.max_seconds:.0f}")
            time.sleep(POLL_SECONDS)
        wall = now - t0
    finally:
        worker.stop()
        db.close()

    return {
        "system": "celery",
        "task": args.task,
        "jobs": args.jobs,
        "completed": done,
        "concurrency": args.concurrency,
        "prefetch_multiplier": args.prefetch_multiplier,
        "confirm_publish": os.environ.get("PEERS_CONFIRM_PUBLISH") == "1",
        "submitted_per_second": args.jobs / submitted,
        "completed_per_second": done / wall,
        "wall_seconds": wall,
        "versions": {
            "celery": celery.__version__,
            "kombu": kombu.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "python": platform.python_version(),
        },
    }


def main():
    args = parse_args()
    # A SIGTERM (run.sh's time cap) unwinds through the finally that stops
    # the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = run(args)
    except BenchError as e:
        print(f"celery bench: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    print(f"celery ({args.task}, -c {args.concurrency}): {report['jobs']} jobs: "
          f"submitted {report['submitted_per_second']:.0f}/s, "
          f"completed {report['completed_per_second']:.0f}/s end to end", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
