"""Run harnesses under atheris with limits, and record what each run found.

    python -m fuzz.run [HARNESS ... | all] [--runs N] [--seconds S] [--jobs J]
                       [--native auto|asan|plain] [--results FILE] [--work DIR] [--seed N]
                       [--keep-going]

Each harness runs as its own process (`python -m fuzz.harness NAME ...`), so a crash, a hang
or a blow-up ends that process only. It stops after N executions or S seconds, whichever
comes first, or at its first finding (libFuzzer's default; --keep-going fuzzes on in a child
process that libFuzzer restarts). Each finding's artifact is replayed on its own to get its
report, and findings are grouped by signature (exception and message, or the frame that
hung). Per harness the results file (default fuzz/results.json; entries for other harnesses
are kept) gets: executions, coverage (the `cov:` and `ft:` figures of libFuzzer's last status
line: edges and features reached; after --keep-going, from a pass over the corpus), corpus
units, executions per second, peak RSS, findings (kind, signature, count, artifacts, report),
crash / timeout / out-of-memory counts, wall time, the limits, whether the native code was
instrumented, the command, and the commit.
The exit status is 1 when any harness had a finding or failed to run.

Under --work DIR (default fuzz/work): corpus/NAME (the growing corpus; kept between runs),
seeds/NAME and dicts/NAME.dict (written fresh from the vectors, `fuzz.seeds`),
artifacts/NAME (findings), logs/NAME.log (libFuzzer's output), tmp/NAME (the harness's
TMPDIR, removed after the run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuzz import native, seeds
from fuzz.harnesses import ALL, HARNESSES, Harness

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "fuzz" / "results.json"
DEFAULT_WORK = ROOT / "fuzz" / "work"

# "#123456	DONE   cov: 812 ft: 2270 corp: 301/52Kb lim: 4096 exec/s: 1890 rss: 97Mb"
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/\S+)?"
                     r"(?:.*?exec/s: (\d+))?(?:.*?rss: (\d+)Mb)?")
# -fork mode: "#407457: cov: 787 ft: 1266 corp: 199 exec/s 11920 oom/timeout/crash: 0/0/0 ..."
_FORK_STATUS = re.compile(r"^#(\d+): cov: (\d+) ft: (\d+) corp: (\d+) exec/s (\d+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT_KINDS = {"crash": "crash", "timeout": "timeout", "oom": "out-of-memory",
                   "leak": "leak"}
#: Findings replayed (one process each) to get their report and signature; the rest of a
#: run's artifacts are counted under the signature "not replayed".
MAX_REPLAYS = 20
# common.check_reason's finding: "... reason is N characters (over N): 'the parser's words, '"
_QUOTED_REASON = re.compile(r"""^(Finding: .* reason [^:]*: (['"])[^'"]*)""")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+),? in (\S+)')


def _commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "relay", "native",
                                "fuzz"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def parse_log(text: str) -> dict[str, Any]:
    """The figures of a libFuzzer log: the last status line and the final stats."""
    figures: dict[str, Any] = {}
    for line in text.splitlines():
        status = _STATUS.match(line) or _FORK_STATUS.match(line)
        if status:
            figures["executions"] = int(status[1])
            figures["cov"] = int(status[2])
            figures["ft"] = int(status[3])
            if status[4]:
                figures["corpus_units"] = int(status[4])
            if status[5]:
                figures["exec_per_sec"] = int(status[5])
            if status.re is _STATUS and status[6]:
                figures["peak_rss_mb"] = int(status[6])
            continue
        stat = _STAT.match(line)
        if stat:
            name, value = stat[1], int(stat[2])
            if name == "number_of_executed_units":
                figures["executions"] = value
            elif name == "average_exec_per_sec":
                figures["exec_per_sec"] = value
            elif name == "peak_rss_mb":
                figures["peak_rss_mb"] = value
            elif name == "new_units_added":
                figures["new_units"] = value
    return figures


def report_of(text: str) -> str:
    """The lines of a replay's output that describe the finding."""
    lines = [line for line in text.splitlines()
             if not line.startswith(("INFO: ", "WARNING: Failed to find function"))]
    for marker in ("=== Uncaught Python exception: ===", "=== Timeout:",
                   "ERROR: libFuzzer: out-of-memory", "ERROR: AddressSanitizer",
                   "ERROR: libFuzzer"):
        for index, line in enumerate(lines):
            if marker in line:
                report = lines[index : index + 40]
                end = next((i for i, text in enumerate(report) if "SUMMARY:" in text),
                           len(report) - 1)
                return "\n".join(report[: end + 1])
    return "\n".join(lines[-20:])


def signature_of(kind: str, report: str) -> str:
    """What tells one finding from another: for an exception its type and message (numbers
    elided; for a reason that is too long, only up to the peer's bytes it quotes), else the
    innermost Python frame of the report (the code that hung)."""
    lines = report.splitlines()
    if kind == "crash" and len(lines) > 1 and ":" in lines[1]:
        message = re.sub(r"\d+", "N", lines[1].strip())
        quoted = _QUOTED_REASON.match(message)
        # An over-long reason quotes the peer's bytes: group by the parser's words before them.
        return (quoted[1] if quoted else message)[:160]
    frames = [m for m in map(_FRAME.match, lines) if m]
    if frames:
        path, line, function = frames[0].groups()
        return f"{kind} in {function} ({Path(path).name}:{line})"
    asan = next((line for line in lines if "ERROR: AddressSanitizer" in line), None)
    return asan.strip() if asan else kind


def _replay(harness: Harness, artifact: Path, env: dict[str, str]) -> str:
    """Run the harness on one artifact (libFuzzer's single-input mode); its output."""
    command = [sys.executable, "-m", "fuzz.harness", harness.name,
               f"-timeout={harness.timeout}", f"-rss_limit_mb={harness.rss_limit_mb}",
               str(artifact)]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=10 * harness.timeout + 60)
    except subprocess.TimeoutExpired:
        return "the replay did not end"
    return done.stdout + done.stderr


def _corpus_coverage(harness: Harness, corpus: Path, env: dict[str, str]) -> dict[str, Any]:
    """cov, ft and units of `corpus`, from one pass over it without fuzzing (-runs=0).

    A -fork run's status lines count coverage another way than a plain run's, so after one
    the corpus is measured like this, and the figures stay comparable between runs."""
    command = [sys.executable, "-m", "fuzz.harness", harness.name, "-runs=0",
               f"-max_len={harness.max_len}", f"-timeout={harness.timeout}",
               f"-rss_limit_mb={harness.rss_limit_mb}", str(corpus)]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=3600)
    except subprocess.TimeoutExpired:
        return {}
    figures = parse_log(done.stdout + done.stderr)
    return {key: figures[key] for key in ("cov", "ft", "corpus_units") if key in figures}


def _display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_harness(harness: Harness, *, runs: int, seconds: int, work: Path,
                native_modules: Path | None, seed: int | None,
                keep_going: bool) -> dict[str, Any]:
    seed_dir = work / "seeds" / harness.name
    corpus = work / "corpus" / harness.name
    artifacts = work / "artifacts" / harness.name
    log_path = work / "logs" / f"{harness.name}.log"
    dict_path = work / "dicts" / f"{harness.name}.dict"
    for directory in (corpus, artifacts, log_path.parent):
        directory.mkdir(parents=True, exist_ok=True)
    has_dict = seeds.write(harness.name, seed_dir, dict_path)
    command = [sys.executable, "-m", "fuzz.harness", harness.name, f"-runs={runs}",
               f"-max_total_time={seconds}", f"-timeout={harness.timeout}",
               f"-rss_limit_mb={harness.rss_limit_mb}", f"-max_len={harness.max_len}",
               "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    if keep_going:
        # Fuzz in a child process that libFuzzer restarts after a finding, so a finding
        # already known (and being fixed) does not end the run.
        command += ["-fork=1", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1"]
    if has_dict:
        command.append(f"-dict={dict_path}")
    if seed is not None:
        command.append(f"-seed={seed}")
    command += [str(corpus), str(seed_dir)]
    # The harness's temporary files (the API harnesses' store, a -fork run's job files), in
    # a directory removed after the run: a fork run restarts the harness process many times.
    scratch = work / "tmp" / harness.name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    instrumented = harness.native and native_modules is not None
    if instrumented:
        assert native_modules is not None
        env.update(native.harness_environment(native_modules))
    before = set(artifacts.iterdir())
    started = time.monotonic()
    with log_path.open("w") as log:
        # libFuzzer's own limits end the run; this one only catches a harness that hangs
        # outside them (at start-up, say).
        deadline = seconds + 10 * harness.timeout + 300
        try:
            exit_code: int | None = subprocess.run(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                timeout=deadline).returncode
        except subprocess.TimeoutExpired:
            exit_code = None
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    found: dict[str, dict[str, Any]] = {}
    new = sorted(set(artifacts.iterdir()) - before, key=lambda path: path.stat().st_mtime)
    for index, artifact in enumerate(new):
        kind = _ARTIFACT_KINDS.get(artifact.name.split("-", 1)[0])
        if kind is None:
            continue
        if index < MAX_REPLAYS:
            report = report_of(_replay(harness, artifact, env))
            signature = signature_of(kind, report)
        else:
            report, signature = "", f"{kind}, not replayed"
        entry = found.setdefault(signature, {"kind": kind, "signature": signature,
                                             "count": 0, "artifacts": [], "report": report})
        entry["count"] += 1
        if len(entry["artifacts"]) < 5:
            entry["artifacts"].append(_display(artifact))
    findings = list(found.values())
    if exit_code != 0 and not findings:
        findings.append({"kind": "harness failed", "signature": f"exit code {exit_code}",
                         "count": 1, "artifacts": [], "report": "\n".join(
                             text.splitlines()[-30:])})
    total = {kind: sum(f["count"] for f in findings if f["kind"] == kind)
             for kind in ("crash", "timeout", "out-of-memory")}
    figures = parse_log(text)
    if keep_going:
        figures.update(_corpus_coverage(harness, corpus, env))
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        **figures,
        "findings": findings,
        "crashes": total["crash"],
        "timeouts": total["timeout"],
        "ooms": total["out-of-memory"],
        "wall_seconds": round(wall, 1),
        "limits": {"runs": runs, "seconds": seconds, "timeout": harness.timeout,
                   "rss_limit_mb": harness.rss_limit_mb, "max_len": harness.max_len},
        "keep_going": keep_going,
        "native_instrumented": instrumented if harness.native else None,
        "exit_code": exit_code,
        "log": _display(log_path),
    }


def _native_modules(mode: str) -> Path | None:
    if mode == "plain":
        return None
    clang = native.find_clang()
    if clang is None:
        if mode == "asan":
            sys.exit("--native asan needs clang (and its sanitizer runtimes) on PATH")
        print("fuzz: no clang; relay._native runs uninstrumented", file=sys.stderr)
        return None
    print(f"fuzz: building the instrumented relay._native with {clang}", file=sys.stderr)
    try:
        return native.build(clang)
    except subprocess.CalledProcessError as exc:
        if mode == "asan":
            sys.exit(f"the instrumented build failed:\n{exc.stdout}\n{exc.stderr}")
        print(f"fuzz: the instrumented build failed, running the plain one:\n{exc.stderr}",
              file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("harnesses", nargs="*", default=["all"],
                        help=f"'all' or some of: {', '.join(HARNESSES)}")
    parser.add_argument("--runs", type=int, default=1_000_000,
                        help="executions per harness (default 10^6)")
    parser.add_argument("--seconds", type=int, default=180,
                        help="wall time per harness, seconds (default 180)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at once")
    parser.add_argument("--native", choices=("auto", "asan", "plain"), default="auto",
                        help="relay._native for the harnesses that use it: built with clang "
                             "coverage and AddressSanitizer (asan), the installed one "
                             "(plain), or asan when clang is there (auto)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--seed", type=int, default=None,
                        help="libFuzzer's random seed (default: a fresh one per run)")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on after a finding (libFuzzer -fork=1 -ignore_crashes=1 "
                             "...): for long runs, where a known finding would end the run")
    args = parser.parse_args(argv)
    names = list(ALL) if args.harnesses == ["all"] else args.harnesses
    unknown = [name for name in names if name not in HARNESSES]
    if unknown:
        parser.error(f"unknown harness {', '.join(unknown)}; known: {', '.join(HARNESSES)}")
    work = args.work.resolve()
    modules = (_native_modules(args.native)
               if any(HARNESSES[name].native for name in names) else None)
    command = " ".join(["python -m fuzz.run", *(argv if argv is not None else sys.argv[1:])])
    commit = _commit()

    def one(name: str) -> tuple[str, dict[str, Any]]:
        print(f"fuzz: {name} ...", file=sys.stderr, flush=True)
        result = run_harness(HARNESSES[name], runs=args.runs, seconds=args.seconds, work=work,
                             native_modules=modules, seed=args.seed,
                             keep_going=args.keep_going)
        result.update(command=command, commit=commit,
                      finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        print(f"fuzz: {name}: {result.get('executions', 0)} executions, "
              f"cov {result.get('cov')}, ft {result.get('ft')}, "
              f"{len(result['findings'])} distinct findings, {result['wall_seconds']} s",
              file=sys.stderr, flush=True)
        return name, result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = dict(pool.map(one, names))
    results_path = args.results
    recorded: dict[str, Any] = {}
    if results_path.is_file():
        recorded = json.loads(results_path.read_text())
    recorded.setdefault("harnesses", {}).update(outcomes)
    recorded["harnesses"] = dict(sorted(recorded["harnesses"].items()))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(recorded, indent=2) + "\n")
    return 1 if any(result["findings"] for result in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
