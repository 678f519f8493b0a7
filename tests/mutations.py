"""Mutation check: put small deliberate bugs into a scratch copy of the repository, one at a time,
and see whether the tests meant to guard that code fail (issue 23).

    python tests/mutations.py --label first     # run every mutation, record under "first"
    python tests/mutations.py --only S6 N3      # some of them (not recorded unless --label)
    python tests/mutations.py --table           # print the recorded table

Selections are narrowed with ``-k`` to the tests that exercise the mutated code, so the whole
check fits a shared 2-core machine. Three groups: ``S`` the 17 mutations issue 23 found surviving, ``O`` ten mutations in the same
modules that the suite caught before (the issue did not list its ten; these are our
reconstruction of that kind of bug), ``N`` new mutations in code the issue did not touch, chosen
from reading the code before the first run. Each mutation is an exact old -> new string edit that
must occur once in its file; a caught mutation is one where the listed tests fail (a collection
or import error counts as caught and is recorded as such). Before the mutations, the same test
selections run on the unmutated copy and must pass, or the run stops.

This is a script, not a test module (pytest does not collect it: its name does not start with
``test_``). Results go to ``docs/results/mutations.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "mutations.json"


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (old, new), each old must occur exactly once
    tests: tuple[str, ...]  # pytest arguments: files, node ids, or "-k", "expr"


def M(id, what, file, edits, tests):
    edits = (edits,) if isinstance(edits[0], str) else edits
    return Mutation(id, what, file, tuple(edits), tuple(tests))


GUIDANCE, GUARDS, MASKS = "tests/test_guidance_calls.py", "tests/test_study_guards.py", "tests/test_attention_masks.py"
REAL_COUNTS = "tests/test_real_token_counts.py"
SWEEPS, SEGMENTATION, SVD = "workbench/studies/localization/sweeps.py", "workbench/studies/attention/segmentation.py", "workbench/analysis/svd.py"
JUDGE, CLOCK, INTERVENTIONS = "workbench/models/judge.py", "workbench/capture/clock.py", "workbench/capture/interventions.py"
REUSE, KERNELS, FREEU = "workbench/capture/reuse.py", "workbench/attention/kernels.py", "workbench/capture/freeu.py"
PATCHING, PROTOCOL = "workbench/studies/localization/patching.py", "workbench/studies/localization/protocol.py"

MUTATIONS = [
    # -- S: the survivors issue 23 lists ----------------------------------------------------------
    M("S1", "prompt-swap baseline runs the target prompt", SWEEPS,
      ("_run(model, sources, entering[k], steps, k, steps,", "_run(model, targets, entering[k], steps, k, steps,"),
      [GUARDS, "-k", "swap"]),
    M("S2", "prompt-swap baseline starts from the initial noise", SWEEPS,
      ("_run(model, sources, entering[k], steps, k, steps,", "_run(model, sources, noise, steps, k, steps,"),
      [GUARDS, "-k", "swap"]),
    M("S3", "segmentation _heat reads the token after the object's", SEGMENTATION,
      ("probs.isel(key=tokens)", "probs.isel(key=[t + 1 for t in tokens])"), [GUARDS, "-k", "heat"]),
    M("S4", "judge: confidence floor removed", JUDGE,
      ('keep = torch.from_numpy(in_world)[:, None] & (conf >= self.calibration["confidence"])',
       "keep = torch.from_numpy(in_world)[:, None]"), [GUARDS, "-k", "judge"]),
    M("S5", "judge: roughness gate removed", JUDGE,
      ('in_world = (stats["border"] <= self.calibration["border"]) & (stats["roughness"] <= self.calibration["roughness"])',
       'in_world = (stats["border"] <= self.calibration["border"])'), [GUARDS, "-k", "judge"]),
    M("S6", "separate-call clock never joins a second call to its step", CLOCK,
      ("same_step = self.branch_calls is not None and self.call + 1 < len(self.branch_calls) and self.timestep == t",
       "same_step = False"), [GUIDANCE]),
    M("S7", "patch reads call 0 instead of the context's call", INTERVENTIONS,
      ("self.source.raw(ctx.site.name, ctx.step, ctx.call)", "self.source.raw(ctx.site.name, ctx.step, 0)"), [GUIDANCE]),
    M("S8", "branch= selects the other branch's rows", INTERVENTIONS,
      ("if b == self.branch]", "if b != self.branch]"), [GUIDANCE]),
    M("S9", "tokens= shifted by one", INTERVENTIONS,
      ("selections[token_dim] = self.tokens", "selections[token_dim] = [t + 1 for t in self.tokens]"), [GUIDANCE]),
    M("S10", "reuse cache key ignores the call index", REUSE,
      ("key = (self.path, clock.call)", "key = (self.path, 0)"), [GUIDANCE]),
    M("S11", "attention probabilities drop attn_mask", KERNELS,
      ("bias = _mask_bias(_causal_or(attn_mask, is_causal, q, k), q.dtype)\n    out = torch.empty",
       "bias = _mask_bias(_causal_or(None, is_causal, q, k), q.dtype)\n    out = torch.empty"), [MASKS]),
    M("S12", "chunked log-sum-exp reads the first chunk's mask rows for every chunk", KERNELS,
      ("bias[..., start:stop, :]", "bias[..., : stop - start, :]"), [MASKS]),
    M("S13", "slerp is a straight line", SVD,
      (("wa = np.where(small, 1 - t, np.sin((1 - t) * omega) / np.where(small, 1, np.sin(omega)))",
        "wa = np.where(small, 1 - t, 1 - t)"),
       ("wb = np.where(small, t, np.sin(t * omega) / np.where(small, 1, np.sin(omega)))", "wb = np.where(small, t, t)")),
      [GUARDS, "-k", "slerp"]),
    M("S14", "attribute_shares uses |c| * ||D|| instead of c^2", SVD,
      ('coef = np.einsum("...mc,...mn,...cn->...c", u, diff.astype(np.float64), vh) ** 2',
       'coef = np.abs(np.einsum("...mc,...mn,...cn->...c", u, diff.astype(np.float64), vh)) '
       '* np.sqrt((diff.astype(np.float64) ** 2).sum((-2, -1)))[..., None]'), [GUARDS, "-k", "attribute"]),
    M("S15", "FreeU's Fourier part ignores steps=", FREEU,
      ("FourierFilter(skip, steps=steps,", "FourierFilter(skip, steps=None,"), [GUARDS, "-k", "freeu"]),
    M("S16", "step slices ignore their stride", INTERVENTIONS,
      ("return step in range(*selection.indices(1 << 30))",
       "return step in range(selection.start or 0, selection.stop if selection.stop is not None else 1 << 30)"),
      [GUARDS, "-k", "stride"]),
    M("S17", "reuse hands out the cached tensor itself", REUSE,
      ("return _clone(cache[key])", "return cache[key]"), [GUIDANCE]),
    # -- O: the kind the suite caught before (reconstructed) ------------------------------------------
    M("O1", "scale adds instead of multiplying", INTERVENTIONS,
      ("return x * self.factor", "return x + self.factor"), ["tests/test_capture_api.py", "-k", "edit_runs"]),
    M("O2", "ablate writes ones", INTERVENTIONS,
      ("return torch.zeros_like(x)", "return torch.ones_like(x)"),
      ["tests/test_capture.py", GUIDANCE, "-k", "interventions_change_only or branch_selects"]),
    M("O3", "FreeU's Fourier box keeps its scale at 1", FREEU,
      ("cols // 2 - threshold: cols // 2 + threshold] = scale", "cols // 2 - threshold: cols // 2 + threshold] = 1.0"),
      ["tests/test_skips.py", "-k", "low_frequency or freeu_equals"]),
    M("O4", "FreeU scales every backbone channel", FREEU,
      ("count = int(x.shape[axis] * self.fraction)", "count = x.shape[axis]"), ["tests/test_skips.py", "-k", "freeu_equals"]),
    M("O5", "judge: border gate removed", JUDGE,
      ('in_world = (stats["border"] <= self.calibration["border"]) & (stats["roughness"]',
       'in_world = (stats["roughness"]'), ["tests/test_judge_checks.py", "-k", "no_object"]),
    M("O6", "reuse key steps off by one", REUSE,
      ("return step % self.every == 0", "return step % self.every == 1"), ["tests/test_skips.py", "-k", "reuse_key or deepcache"]),
    M("O7", "attention scale 1/d instead of 1/sqrt(d)", KERNELS,
      ("return q.shape[-1] ** -0.5 if scale is None else scale", "return q.shape[-1] ** -1.0 if scale is None else scale"),
      ["tests/test_capture.py", "-k", "blocks_from_log_sum_exp"]),
    M("O8", "sweep starts every variant from the initial noise", SWEEPS,
      ("entering[s], at = latents, s", "entering[s], at = noise, s"), ["tests/test_localization.py", "-k", "sweep_engine"]),
    M("O9", "SVD reconstruction drops the singular values", SVD,
      ("matrices = (u * s[..., None, :]) @ vh", "matrices = u @ vh"), ["tests/test_svd.py", "-k", "reconstructs"]),
    M("O10", "heads= shifted by one", INTERVENTIONS,
      ('selections["head"] = self.heads', 'selections["head"] = [h + 1 for h in self.heads]'), ["tests/test_capture.py", "-k", "interventions_change_only"]),
    # -- N: new, in code issue 23 did not touch (chosen before the first run) -------------------------
    M("N1", "token alignment repeats the wrong token of a shorter piece", PATCHING,
      ("s_tokens[min(i, len(s_tokens) - 1)]", "s_tokens[min(i, len(s_tokens)) - 1]"),
      ["tests/test_localization.py", "-k", "align_tokens"]),
    M("N2", "greedy head set breaks ties to the higher head", PROTOCOL,
      ("head = max(trials, key=lambda h: (trials[h], -h))", "head = max(trials, key=lambda h: (trials[h], h))"),
      ["tests/test_localization.py", "-k", "greedy"]),
    M("N3", "smallest layer set breaks ties to the lower success", PROTOCOL,
      ("reaching = [(len(k), -v, k)", "reaching = [(len(k), v, k)"), ["tests/test_localization.py", "-k", "greedy"]),
    M("N4", "PSNR outside the mask is measured inside it", "workbench/analysis/metrics.py",
      ("return psnr(images, reference, ~np.asarray(masks, dtype=bool))",
       "return psnr(images, reference, np.asarray(masks, dtype=bool))"),
      ["tests/test_localization.py", "-k", "psnr"]),
    M("N5", "probe split drops one training example per class", "workbench/analysis/probe.py",
      ("n_train = len(members) - n_val - n_test", "n_train = len(members) - n_val - n_test - 1"),
      ["tests/test_probe.py", "-k", "split"]),
    M("N6", "feature noise ignores the draw index", "workbench/features/noising.py",
      ("spawn_key=(int(index), int(timestep), int(draw))", "spawn_key=(int(index), int(timestep), 0)"),
      ["tests/test_features.py", "-k", "noise_depends"]),
    M("N7", "batch noise is image-major", "workbench/features/noising.py",
      ("for d in range(draws) for i in indices", "for i in indices for d in range(draws)"),
      ["tests/test_features.py", "-k", "noise_depends"]),
    M("N8", "classifier-free guidance starts from the cond prediction", "workbench/model.py",
      ("pred = uncond + guidance_scale * (cond - uncond)", "pred = cond + guidance_scale * (cond - uncond)"),
      ["tests/test_tiny_models.py", "tests/test_runs.py", GUIDANCE, "-k", "cfg or bare_denoise or resumed or guided"]),
    M("N9", "glyph magnification rounds down", "workbench/data/render.py",
      ("int(np.floor(2 * radius / GLYPH_HEIGHT + 0.5))", "int(np.floor(2 * radius / GLYPH_HEIGHT))"),
      ["tests/test_shapes.py", GUARDS, "-k", "glyph or masks"]),
    M("N10", "probe peaks picked on test accuracy", "workbench/analysis/probe.py",
      ("np.where(np.isnan(acc.values), np.nan, val.values)", "np.where(np.isnan(acc.values), np.nan, acc.values)"),
      ["tests/test_probe.py", "-k", "peaks"]),
    # issue 22 (item 6): attention at real token counts, through the recorder and the kernels
    M("N11", "the recorder drops the kernel call's attn_mask", "workbench/capture/attention.py",
      ('for key in ("scale", "attn_mask", "is_causal")', 'for key in ("scale", "is_causal")'),
      [REAL_COUNTS, "-k", "qwen or sana"]),
    M("N12", "chunked log-sum-exp takes the first chunk's queries for every chunk", KERNELS,
      ("_logits(q[..., start:stop, :], k, scale, chunk_bias)",
       "_logits(q[..., : min(stop, q.shape[-2]) - start, :], k, scale, chunk_bias)"), [REAL_COUNTS]),
    M("N13", "block probabilities from the log-sum-exp ignore the mask", KERNELS,
      ("bias = _query_rows(_mask_bias(_causal_or(attn_mask, is_causal, q, k), q.dtype), qs)",
       "bias = _query_rows(_mask_bias(_causal_or(None, is_causal, q, k), q.dtype), qs)"),
      [REAL_COUNTS, "-k", "chunked or qwen"]),
]


def scratch_copy() -> Path:
    """Tracked and untracked-but-not-ignored files of the working tree, copied under /tmp."""
    target = Path(tempfile.mkdtemp(prefix="workbench-mutations-"))
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_symlink():  # e.g. workbench/datasets -> ../datasets: keep it a link
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(source), target / name)
        elif source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # the installed package maps workbench.hooks to the repository's hooks/ (pyproject package-dir);
    # link it inside the copy so the copy never imports the working tree's hooks
    (target / "workbench" / "hooks").symlink_to(Path("..") / "hooks")
    return target


def run_tests(scratch: Path, tests: tuple[str, ...]) -> tuple[int, str, float]:
    """Run ``tests`` inside this process on the scratch copy (torch, diffusers and the test
    dependencies are imported once for all mutations: on a shared 2-core machine a fresh
    interpreter per mutation costs more than the tests). Every ``workbench`` module and every test
    module is dropped first, so each run imports the files as they are now."""
    import pytest

    for name in [n for n in sys.modules if n == "workbench" or n.startswith(("workbench.", "test_", "conftest"))]:
        del sys.modules[name]
    capture = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(capture):
        code = pytest.main(["-q", "-x", "-n", "0", "-p", "no:cacheprovider", "-rf", *tests])
    import workbench
    import workbench.hooks

    for module in (workbench, workbench.hooks):
        if not module.__file__.startswith(str(scratch)):
            raise RuntimeError(f"the tests imported {module.__file__}, not the scratch copy under {scratch}")
    return int(code), capture.getvalue(), time.perf_counter() - start


def failing(output: str) -> list[str]:
    return [line.split(" ")[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))][:3]


def apply(scratch: Path, mutation: Mutation) -> str:
    path = scratch / mutation.file
    text = original = path.read_text()
    for old, new in mutation.edits:
        if text.count(old) != 1:
            raise ValueError(f"{mutation.id}: {old!r} occurs {text.count(old)} times in {mutation.file}, not once")
        text = text.replace(old, new)
    path.write_text(text)
    return original


def baseline_selections(selected: list[Mutation]) -> list[tuple[str, ...]]:
    """At most two runs covering every selection: the whole files some mutation runs whole, and
    the other files under the union of the ``-k`` expressions (a superset of each selection)."""
    whole, filtered, expressions = set(), set(), []
    for m in selected:
        files = [t for t in m.tests if t.startswith("tests/")]
        if "-k" in m.tests:
            filtered.update(files)
            expressions.append(m.tests[m.tests.index("-k") + 1])
        else:
            whole.update(files)
    runs = [tuple(sorted(whole))] if whole else []
    if filtered - whole:
        runs.append((*sorted(filtered - whole), "-k", " or ".join(dict.fromkeys(expressions))))
    return runs


def run(selected: list[Mutation]) -> dict:
    scratch = scratch_copy()
    here = os.getcwd()
    os.chdir(scratch)
    sys.path.insert(0, str(scratch))
    try:
        for tests in baseline_selections(selected):  # the guards pass on the correct code
            code, out, _ = run_tests(scratch, tests)
            if code != 0:
                raise RuntimeError(f"tests {' '.join(tests)} fail on the unmutated code:\n{out[-3000:]}")
        results = {}
        for m in selected:
            original = apply(scratch, m)
            try:
                code, out, seconds = run_tests(scratch, m.tests)
            finally:
                (scratch / m.file).write_text(original)
            results[m.id] = {"what": m.what, "file": m.file, "tests": " ".join(m.tests), "caught": code != 0,
                             "exit_code": code, "failing": failing(out), "seconds": round(seconds, 1)}
            print(f"{m.id:4} {'caught  ' if code else 'SURVIVED'} {seconds:6.1f} s  {m.what}", flush=True)
        return results
    finally:
        os.chdir(here)
        sys.path.remove(str(scratch))
        shutil.rmtree(scratch, ignore_errors=True)


def summary(results: dict) -> dict:
    groups = {}
    for group in "SON":
        ids = [k for k in results if k.startswith(group)]
        groups[group] = {"caught": sum(results[k]["caught"] for k in ids), "total": len(ids)}
    return groups


def table(record: dict) -> str:
    lines = []
    for label, run_ in record["runs"].items():
        counts = ", ".join(f"{g}: {c['caught']}/{c['total']}" for g, c in run_["summary"].items())
        lines += [f"## run '{label}' ({run_['date']}, commit {run_['commit']}): {counts}", "",
                  "| id | mutation | tests | caught |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['what']} | `{v['tests']}` | {'yes' if v['caught'] else '**no**'} |"
                  for k, v in run_["results"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="mutation ids to run (default: all)")
    parser.add_argument("--label", help="record the run under this label in docs/results/mutations.json")
    parser.add_argument("--table", action="store_true", help="print the recorded runs and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return
    ids = {m.id for m in MUTATIONS}
    unknown = sorted(set(args.only or ()) - ids)
    if unknown:
        raise SystemExit(f"unknown mutation ids {unknown}; valid: {', '.join(m.id for m in MUTATIONS)}")
    selected = [m for m in MUTATIONS if not args.only or m.id in args.only]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()  # the code the scratch copy was made from
    results = run(selected)
    print(summary(results))
    if args.label:
        record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
        record["runs"][args.label] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
                                      "summary": summary(results), "results": results}
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
