"""The console table, its legend, the summary line, and the markdown report."""
from __future__ import annotations

from collections import Counter
from typing import List, Optional, Sequence

from .verdicts import Result

COLUMNS = ["model", "dataset", "images", "paper", "authors' log", "measured", "delta", "verdict"]

LEGEND = (
    "Top-1 accuracy in percent. paper: the paper's figure (* not confirmed from a primary copy "
    "of the paper); authors' log: the authors' log for this very checkpoint; delta: measured "
    "minus the authors' log (log) or minus a measurement recorded in the manifest for the same "
    "set and number of images (rec). Verdicts: PASS/FAIL |delta| within the weight's "
    "tolerance (0.1 points unless the manifest says otherwise); INFO no expectation for this set "
    "or size (auxiliary set, or --limit); OK smoke check passed (the embedded sample: the weight "
    "loads and classifies rotated digits, no published accuracy is confirmed); NOT DOWNLOADED "
    "the full test set is not on this machine and could not be fetched; MISSING test data or "
    "weight not found where it was asked for; ERROR anything else.")


def _fmt(v: Optional[float], digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def table_rows(results: Sequence[Result]) -> List[List[str]]:
    rows = []
    for r in results:
        paper = _fmt(r.paper) + ("" if r.paper is None or r.paper_confirmed else "*")
        delta = "-" if r.delta is None else (
            f"{_fmt(r.delta, sign=True)} ({'rec' if r.expected_from == 'recorded' else 'log'})")
        rows.append([r.model, r.dataset, str(r.images) if r.images else "-", paper, _fmt(r.log),
                     _fmt(r.measured), delta, r.verdict])
    return rows


def format_text(results: Sequence[Result]) -> str:
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(results: Sequence[Result], meta: dict) -> str:
    out = ["# agcnn-zoo: reproduced test accuracies", "",
           f"Date {meta['date']}, device {meta['device']}, torch {meta['torch']}, "
           f"command `{meta['command']}`.", "",
           "| " + " | ".join(COLUMNS) + " | images/s |",
           "|" + "---|" * (len(COLUMNS) + 1)]
    for r, row in zip(results, table_rows(results)):
        speed = f"{r.images_per_s:.1f}" if r.images_per_s else "-"
        out.append("| " + " | ".join(row) + f" | {speed} |")
    out += ["", LEGEND]
    notes = [f"- {r.model} on {r.dataset}: {r.message}" for r in results if r.message]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out) + "\n"


def summary_line(results: Sequence[Result], smoke: Sequence[Result]) -> str:
    """One line: what was checked and how it came out."""
    counts = Counter(r.verdict for r in results)
    parts = [f"{n} {v}" for v, n in sorted(counts.items())]
    line = f"summary: full test sets: {', '.join(parts) or 'nothing run'}"
    if smoke:
        ok = sum(r.verdict == "OK" for r in smoke)
        line += f"; smoke check on the embedded sample: {ok} of {len(smoke)} weights OK"
    return line
