"""Mutation testing of kpref's numerical modules: apply each one-line mutant of ``catalogue.py`` to a
temporary copy of the package, run its targeted tests without torch, record killed / survived.

    nice -n 10 timeout 7200 python validation/mutation/run_catalogue.py [--only TEXT,TEXT] [--out FILE]

* The copy lives in a temporary folder (the checkout is never modified); numba's cache lives there
  too and survives between mutants: each mutant is restored with its original modification time, so
  only the mutated file's kernels recompile.
* torch is hidden (a ``torch`` package that raises ImportError comes first on the path), so tests that
  need it skip: the score is that of ``tests/`` without torch.
* Tests run with ``HYPOTHESIS_PROFILE=ci`` (derandomized: a mutant's verdict is reproducible) and
  ``-x`` (the first failure kills the mutant).
* The unmutated copy must pass every selected test first, or the run stops.

Prints a table (id, module, verdict, seconds, the first failing test) and writes it as JSON.
Why not cosmic-ray or mutmut: cosmic-ray 8.7 works with numba's cached kernels (it edits files in a
copy), but generates 980 mutants for ``operators/_linearization.py`` alone, about 15 000 for the
numerical modules; at 10–60 s of targeted tests each on two shared cores that is days. mutmut 3
wraps every function in a trampoline, which numba's ``@njit`` kernels cannot compile. A catalogue
of plausible one-line bugs, each with its argument, is what fits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from catalogue import EQUIVALENT, MUTANTS, TESTS  # noqa: E402


def tests_for(path):
    """The tests of the most specific ``TESTS`` entry covering ``path``."""
    keys = [k for k in TESTS if path == k or path.startswith(k.rstrip("/") + "/")]
    if not keys:
        raise SystemExit(f"catalogue: no tests selected for {path}")
    return TESTS[max(keys, key=len)]


def check_catalogue(root, skip_missing=False):
    """Refuse a catalogue that drifted from the code; with ``skip_missing`` return the ids that do not apply."""
    ids, missing = set(), set()
    for mid, path, old, new, _ in MUTANTS:
        if mid in ids:
            raise SystemExit(f"catalogue: duplicate id {mid}")
        ids.add(mid)
        text = (root / path).read_text(encoding="utf-8")
        count = text.count(old)
        if count == 0 and skip_missing:
            missing.add(mid)
            continue
        if count != 1:
            raise SystemExit(f"catalogue: {mid}: the original text occurs {count} times in {path} (expected once)")
        if old == new:
            raise SystemExit(f"catalogue: {mid}: the mutant equals the original")
    unknown = set(EQUIVALENT) - ids
    if unknown:
        raise SystemExit(f"catalogue: EQUIVALENT names unknown mutants {sorted(unknown)}")
    return missing


def make_copy(root, dest):
    for name in ("kpref", "tests", "validation"):
        shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    for name in ("conftest.py", "pyproject.toml", "README.md"):
        shutil.copy2(root / name, dest / name)
    docs = root / "docs"
    if docs.exists():
        shutil.copytree(docs, dest / "docs")
    fake = dest / "_no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ModuleNotFoundError("torch is hidden for mutation testing", name="torch")\n')


def run_tests(copy, tests, timeout):
    env = dict(os.environ, PYTHONPATH=f"{copy / '_no_torch'}{os.pathsep}{copy}", HYPOTHESIS_PROFILE="ci",
               OPENBLAS_NUM_THREADS="1", NUMBA_CACHE_DIR=str(copy / "_numba_cache"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    seconds = time.perf_counter() - start
    failed = re.findall(r"^FAILED (\S+)", out.stdout, re.M)
    if out.returncode == 0:
        return "passed", seconds, ""
    if out.returncode == 1 and failed:
        return "failed", seconds, failed[0]
    return "error", seconds, (out.stdout + out.stderr).strip().splitlines()[-1][:200] if (out.stdout + out.stderr).strip() else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated texts: run the mutants whose id or file contains one")
    ap.add_argument("--out", default=str(ROOT / "validation" / "mutation" / "last_run.json"),
                    help="where to write the results (JSON)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per mutant's tests (a timeout kills)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--root", default=str(ROOT),
                    help="the checkout to mutate (default this one; e.g. an exported older commit to score it)")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    missing = check_catalogue(root, skip_missing=root != ROOT)
    if missing:
        print(f"not applicable to {root} (text not found): {', '.join(sorted(missing))}")
    parts = args.only.split(",")
    selected = [m for m in MUTANTS if any(p in m[0] or p in m[1] for p in parts) and m[0] not in missing]
    tmp = Path(tempfile.mkdtemp(prefix="kpref-mutation-"))
    results = []
    try:
        make_copy(root, tmp)
        for tests in sorted({tuple(tests_for(m[1])) for m in selected}):
            verdict, seconds, first = run_tests(tmp, list(tests), args.timeout)
            print(f"baseline {' '.join(tests)}: {verdict} ({seconds:.0f} s) {first}", flush=True)
            if verdict != "passed":
                raise SystemExit("the unmutated copy fails its tests: fix that first")
        for mid, path, old, new, note in selected:
            target = tmp / path
            original = target.read_text(encoding="utf-8")
            stat = target.stat()
            try:
                target.write_text(original.replace(old, new), encoding="utf-8")
                verdict, seconds, first = run_tests(tmp, tests_for(path), args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
                os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # numba's cache stays valid
            status = {"failed": "killed", "error": "killed (error)", "timeout": "killed (timeout)",
                      "passed": "equivalent" if mid in EQUIVALENT else "SURVIVED"}[verdict]
            results.append(dict(id=mid, file=path, status=status, seconds=round(seconds, 1), killed_by=first,
                                note=note, argument=EQUIVALENT.get(mid, "")))
            print(f"{mid:<45} {path:<36} {status:<17} {seconds:6.0f} s  {first}", flush=True)
    finally:
        if args.keep:
            print(f"copy kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    killed = sum(r["status"].startswith("killed") for r in results)
    equivalent = sum(r["status"] == "equivalent" for r in results)
    survived = [r["id"] for r in results if r["status"] == "SURVIVED"]
    summary = dict(mutants=len(results), killed=killed, equivalent=equivalent, survived=survived,
                   score=f"{killed}/{len(results) - equivalent}")
    print(f"\n{killed} killed, {equivalent} equivalent, {len(survived)} survived of {len(results)} mutants "
          f"(score {summary['score']} non-equivalent killed); survivors: {', '.join(survived) or 'none'}")
    tmp_out = Path(args.out).with_suffix(".tmp")
    tmp_out.write_text(json.dumps(dict(summary=summary, results=results), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_out, args.out)
    return 0 if not survived else 1


if __name__ == "__main__":
    sys.exit(main())
