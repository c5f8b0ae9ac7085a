"""Records each side's figures and prints the comparison (for run.sh).

  python -m celery_bench.summary record --system ours|celery --run K --load L OUTPUT RESULTS
      reads one side's output (loadgen's pretty-printed JSON report, or
      bench.py's JSON line), checks that every job completed, and appends one
      normalised JSON line to RESULTS
  python -m celery_bench.summary table RESULTS [--meta JSON]
      prints the table (system, run, jobs/s), the medians, the ratio
      ours/celery, and last the whole as one JSON line
"""

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone


class SummaryError(Exception):
    pass


def first_json_object(text, source):
    """The first JSON object in `text` that starts a line (loadgen prints
    its report pretty, then a summary; bench.py prints one line)."""
    decoder = json.JSONDecoder()
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            try:
                obj, _ = decoder.raw_decode(text, offset + (len(line) - len(line.lstrip())))
                if isinstance(obj, dict):
                    return obj
            except json.JSONDecodeError:
                pass
        offset += len(line)
    raise SummaryError(f"no JSON report in {source}")


def record(args):
    with open(args.output, encoding="utf-8", errors="replace") as f:
        report = first_json_object(f.read(), args.output)
    rate = report.get("completed_per_second")
    if not isinstance(rate, (int, float)):
        raise SummaryError(f"{args.output}: no completed_per_second in the report")
    if args.system == "ours":
        if report.get("exactly_once") is not True:
            raise SummaryError(
                f"loadgen: not every job completed exactly once (completed {report.get('completed')} "
                f"of {report.get('jobs')}, not completed: {report.get('not_completed')})")
        detail = {k: report.get(k) for k in ("agent_count", "capacity", "batch", "connections", "https")}
        detail["cpu_ms_per_job_box"] = (report.get("cpu_ms_per_job") or {}).get("box_total")
        detail["latency_ms"] = report.get("latency_ms")
    else:
        if report.get("completed") != report.get("jobs"):
            raise SummaryError(f"celery: {report.get('completed')} of {report.get('jobs')} completed")
        detail = {k: report.get(k) for k in ("task", "concurrency", "prefetch_multiplier",
                                              "confirm_publish", "versions")}
    line = {
        "system": args.system,
        "run": args.run,
        "jobs": report.get("jobs"),
        "completed": report.get("completed"),
        "completed_per_second": rate,
        "submitted_per_second": report.get("submitted_per_second"),
        "wall_seconds": report.get("wall_seconds"),
        "loadavg_1m_before": args.load,
        "detail": detail,
    }
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def cgroup_version():
    return "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"


def table(args):
    rows = []
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    by = {s: [r for r in rows if r["system"] == s] for s in ("ours", "celery")}
    print(f"{'system':<8} {'run':>3} {'jobs/s':>9} {'wall s':>8} {'load before':>11}")
    for r in sorted(rows, key=lambda r: (r["run"], r["system"] != "ours")):
        load = r.get("loadavg_1m_before")
        print(f"{r['system']:<8} {r['run']:>3} {r['completed_per_second']:>9.1f} "
              f"{r['wall_seconds']:>8.1f} {load if load is not None else '-':>11}")
    med = {s: statistics.median(r["completed_per_second"] for r in v) if v else None
           for s, v in by.items()}
    ratio = med["ours"] / med["celery"] if med["ours"] and med["celery"] else None
    if ratio is not None:
        print(f"median: ours {med['ours']:.1f} jobs/s, celery {med['celery']:.1f} jobs/s; "
              f"ratio ours/celery {ratio:.2f}")
    else:
        print("median: a side has no figure, so no ratio")
    summary = {
        "benchmark": "bench/peers",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"cores": os.cpu_count(), "cgroup": cgroup_version(), "kernel": platform.release()},
        **(json.loads(args.meta) if args.meta else {}),
        "ours_jobs_per_second": [r["completed_per_second"] for r in by["ours"]],
        "celery_jobs_per_second": [r["completed_per_second"] for r in by["celery"]],
        "ours_median": med["ours"],
        "celery_median": med["celery"],
        "ratio_ours_over_celery": ratio,
        "runs_detail": rows,
    }
    print(json.dumps(summary))
    return 0 if ratio is not None else 1


def main():
    p = argparse.ArgumentParser(description="bench/peers figures")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--system", choices=["ours", "celery"], required=True)
    r.add_argument("--run", type=int, required=True)
    r.add_argument("--load", type=float, default=None)
    r.add_argument("output")
    r.add_argument("results")
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("--meta", default=None, help="a JSON object merged into the summary line")
    args = p.parse_args()
    try:
        if args.cmd == "record":
            record(args)
            return 0
        return table(args)
    except SummaryError as e:
        print(f"bench/peers: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
