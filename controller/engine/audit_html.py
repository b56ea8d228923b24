"""The audit as one self-contained HTML file: styles inline, loss curves as inline SVG, no script, no
external asset, so an auditor opens it anywhere without installing anything."""

from __future__ import annotations

from html import escape
from typing import Any

from controller.engine.audit import Event, ModelAudit, RetiredVersion
from controller.engine.registry.versions import Version

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dee9;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}table{border-collapse:collapse;width:100%;margin:.5em 0 1em}
th,td{border-bottom:1px solid #e5e9f0;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f9;font-weight:600}code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.muted{color:#6b7280}
.kind{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:12px;background:#eef1f6}
.promoted,.gate-passed{background:#dcfce7}.rolled-back,.approval-not-counted{background:#fef3c7}
.gate-failed,.blocked,.failed{background:#fee2e2}.approved{background:#e0e7ff}.spec-changed{background:#f3e8ff}
.card dt{font-weight:600}.card dd{margin:0 0 .6em 0}.curves{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{font-size:12px;color:#6b7280}tr.retired td{color:#6b7280}
"""

WIDTH, HEIGHT, PAD = 420, 180, 36


def render(audits: list[ModelAudit], *, repository: str, generated_at: str) -> str:
    body = [
        "<h1>qmlops audit</h1>",
        f"<p class='muted'>Repository <code>{escape(repository)}</code>, generated {escape(generated_at)} "
        "from its Git history.</p>",
    ]
    if not audits:
        body.append("<p>No model in this repository's registry.</p>")
    for audit in audits:
        body.append(_model(audit))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>qmlops audit: {escape(repository)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _model(audit: ModelAudit) -> str:
    parts = [f"<h2 id='{escape(audit.model)}'>{escape(audit.model)}</h2>", _verification(audit)]
    champion = next((v for v in audit.versions if v.number == audit.champion), None)
    if champion is not None:
        accuracy = champion.scalar_metrics().get("accuracy")
        acc = f", test accuracy {accuracy:.3f}" if accuracy is not None else ""
        parts.append(f"<p>Champion: <b>version {champion.number}</b>{acc} <code>{escape(champion.digest)}</code></p>")
    else:
        parts.append("<p>No champion.</p>")
    if audit.spec_paths:
        files = ", ".join(f"<code>{escape(p)}</code>" for p in audit.spec_paths)
        parts.append(f"<p class='muted'>Spec: {files}</p>")
    policy = audit.policy_lines()
    if policy:
        parts.append("<h3>Effective policy</h3><ul>" + "".join(f"<li>{escape(line)}</li>" for line in policy) + "</ul>")
    parts.append(_model_card(audit.model_card))
    parts.append("<h3>Versions</h3>" + _versions(audit.versions, audit.champion, audit.retired))
    runs = audit.runs()
    if runs:
        parts.append("<h3>Pipeline runs</h3>" + "".join(_run(run) for run in runs[-10:]))
    curves = [_curve(v) for v in audit.versions if len(v.loss_curve) >= 2]
    if curves:
        parts.append("<h3>Loss curves</h3><div class='curves'>" + "".join(curves) + "</div>")
    hardware = _hardware(audit)
    if hardware:
        parts.append("<h3>Hardware drift</h3>" + hardware)
    parts.append("<h3>Timeline</h3>" + _timeline(audit.events))
    return "\n".join(parts)


def hardware_points(audit: ModelAudit) -> list[tuple[str, str, float | None, float | None]]:
    """ESP and replayed accuracy over time, from Git alone: each version's ESP at training (its lineage)
    and each drift-detected entry's figures after (today's ESP, the replayed accuracy).
    ``(time, label, esp, replay accuracy)`` in time order."""
    points: list[tuple[str, str, float | None, float | None]] = []
    for version in audit.versions:
        hardware = ((version.artifact.get("lineage") or {}).get("calibration")) or {}
        if isinstance(hardware.get("esp"), int | float):
            points.append((version.registered_at, f"version {version.number} trained", float(hardware["esp"]), None))
    for event in audit.events:
        if event.kind != "drift-detected":
            continue
        figures = event.data.get("figures") or {}
        esp = (figures.get("esp") or {}).get("after")
        accuracy = (figures.get("accuracy") or {}).get("after")
        if isinstance(esp, int | float) or isinstance(accuracy, int | float):
            points.append(
                (
                    event.at,
                    f"drift on version {event.version} ({event.data.get('check')})",
                    float(esp) if isinstance(esp, int | float) else None,
                    float(accuracy) if isinstance(accuracy, int | float) else None,
                )
            )
    return sorted(points, key=lambda p: p[0])


def _hardware(audit: ModelAudit) -> str:
    """ESP (blue) and replayed accuracy (orange) over time, on a 0..1 axis, with a table of the points."""
    points = hardware_points(audit)
    if not points:
        return ""
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(1, len(points) - 1)

    def series(index: int, colour: str) -> str:
        xy = []
        for i, point in enumerate(points):
            value = point[index]
            if isinstance(value, float):
                xy.append((PAD + i * step, PAD + inner_h - value * inner_h))
        if not xy:
            return ""
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{colour}'/>" for x, y in xy)
        return f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{line}'/>{dots}"

    axis = (
        f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{PAD + inner_h}' stroke='#9ca3af'/>"
        f"<line x1='{PAD}' y1='{PAD + inner_h}' x2='{PAD + inner_w}' y2='{PAD + inner_h}' stroke='#9ca3af'/>"
        f"<text x='{PAD - 4}' y='{PAD + 4}' font-size='10' text-anchor='end'>1</text>"
        f"<text x='{PAD - 4}' y='{PAD + inner_h}' font-size='10' text-anchor='end'>0</text>"
        f"<text x='{WIDTH / 2}' y='{HEIGHT - 2}' font-size='10' text-anchor='middle'>time</text>"
    )
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' "
        f"role='img' aria-label='ESP and replayed accuracy over time'>{axis}"
        f"{series(2, '#2563eb')}{series(3, '#ea580c')}</svg>"
    )
    rows = "".join(
        f"<tr><td>{escape(at)}</td><td>{escape(label)}</td><td>{_number(esp)}</td><td>{_number(accuracy)}</td></tr>"
        for at, label, esp, accuracy in points
    )
    table = f"<table><tr><th>at</th><th>what</th><th>ESP</th><th>replayed accuracy</th></tr>{rows}</table>"
    caption = "ESP (blue) at each training and at each drift; replayed accuracy (orange) at each drift"
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>{table}"


def _verification(audit: ModelAudit) -> str:
    result = audit.verification
    if result is None:
        return "<p class='muted'>History not verified (run <code>qmlops audit --verify</code>).</p>"
    counts = f"{result.entries} ledger entries, {result.versions} versions, {result.commits} commits checked"
    if result.ok:
        return f"<p class='ok'>Verified: the ledger chain, every version digest and every commit's author hold ({counts}).</p>"
    items = "".join(f"<li>{escape(p.format())}</li>" for p in result.problems)
    return f"<div class='bad'><p>Verification FAILED ({counts}):</p><ul>{items}</ul></div>"


def _model_card(card: dict[str, Any] | None) -> str:
    if not card:
        return "<h3>Model card</h3><p class='muted'>The spec has no model card.</p>"
    labels = {
        "intendedUse": "Intended use",
        "limitations": "Limitations",
        "ethicalConsiderations": "Ethical considerations",
        "trainingData": "Training data",
        "caveats": "Caveats",
    }
    rows = "".join(
        f"<dt>{escape(labels.get(k, k))}</dt><dd>{escape(str(v))}</dd>" for k, v in card.items() if v is not None
    )
    return f"<h3>Model card</h3><dl class='card'>{rows}</dl>"


def _versions(versions: list[Version], champion: int | None, retired: list[RetiredVersion] | None = None) -> str:
    if not versions and not retired:
        return "<p class='muted'>No version registered.</p>"
    head = "<tr><th>version</th><th>registered</th><th>metrics</th><th>backend</th><th>lineage</th><th>digest</th></tr>"
    rows: list[tuple[int, str]] = []
    for r in retired or []:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(r.metrics.items()) if isinstance(val, int | float))
        lineage = [
            f"spec {escape(str(r.source.get('revision') or '?'))}",
            f"by {escape(str(r.source.get('author') or '?'))}",
            f"<b>retired</b> {escape(r.retired_at)}: {escape(r.describe())}",
        ]
        rows.append(
            (
                r.number,
                f"<tr class='retired'><td><b>{r.number}</b> (retired)</td><td>{escape(r.registered_at)}</td>"
                f"<td>{escape(metrics)}</td><td>{escape(r.backend or '?')}</td>"
                f"<td class='mono'>{'<br>'.join(lineage)}</td><td class='mono'>{escape(r.digest[:23])}…</td></tr>",
            )
        )
    for v in versions:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.scalar_metrics().items()))
        source = v.source
        lineage = [
            f"spec {escape(str(source.get('revision') or '?'))}",
            f"by {escape(str(source.get('author') or '?'))}",
            f"file {escape(str(source.get('path') or '?'))}",
            f"dataset {escape(v.dataset_digest[:19])}…",
        ]
        usage = v.usage
        if usage:
            lineage.append("usage " + escape(", ".join(f"{k} {val}" for k, val in sorted(usage.items()))))
        star = " ★" if v.number == champion else ""
        rows.append(
            (
                v.number,
                f"<tr><td><b>{v.number}</b>{star}</td><td>{escape(v.registered_at)}</td><td>{escape(metrics)}</td>"
                f"<td>{escape(v.backend or '?')}</td><td class='mono'>{'<br>'.join(lineage)}</td>"
                f"<td class='mono'>{escape(v.digest[:23])}…</td></tr>",
            )
        )
    return f"<table>{head}{''.join(row for _, row in sorted(rows, key=lambda item: item[0]))}</table>"


def _run(run: dict[str, Any]) -> str:
    """One run as a table: a row per cell, a column per backend it was evaluated on (accuracy), the
    selected version marked."""
    backends = sorted({b for cell in run["cells"] for b in cell["scores"]})
    phase = "ok" if run["phase"] == "Succeeded" else "bad" if run["phase"] == "Failed" else "muted"
    title = (
        f"<p><b>{escape(run['pipeline'])}</b> run <code>{escape(run['id'])}</code> "
        f"<span class='{phase}'>{escape(run['phase'])}</span> <span class='muted'>({escape(run['cause'])}: "
        f"{escape(run['reason'])}; started {escape(run['started'])})</span></p>"
    )
    head = "<tr><th>cell</th><th>version</th>" + "".join(f"<th>{escape(b)}</th>" for b in backends) + "</tr>"
    rows = []
    for cell in run["cells"]:
        selected = cell["version"] == run["selected"]
        marks = (" ★ selected" if selected else "") + (" (cache)" if cell["cached"] else "")
        scores = "".join(f"<td>{_figure((cell['scores'].get(b) or {}).get('accuracy'))}</td>" for b in backends)
        rows.append(
            f"<tr><td class='mono'>{escape(cell['label'])}</td><td><b>{cell['version']}</b>{escape(marks)}</td>{scores}</tr>"
        )
    failed = [f"{name}: {step['message']}" for name, step in run["steps"].items() if step["phase"] == "Failed"]
    notes = "".join(f"<p class='bad'>{escape(text)}</p>" for text in failed)
    return f"{title}<table>{head}{''.join(rows)}</table>{notes}"


def _number(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "<span class='muted'>-</span>"


def _figure(value: Any) -> str:
    return f"accuracy {value:.3f}" if isinstance(value, int | float) else "<span class='muted'>-</span>"


def _timeline(events: list[Event]) -> str:
    if not events:
        return "<p class='muted'>Nothing happened yet.</p>"
    head = "<tr><th>when</th><th>event</th><th>version</th><th>by</th><th>commit</th><th>what</th></tr>"
    rows = [
        f"<tr><td class='mono'>{escape(e.at)}</td><td><span class='kind {escape(e.kind)}'>{escape(e.kind)}</span></td>"
        f"<td>{'' if e.version is None else e.version}</td><td>{escape(e.by or '')}</td>"
        f"<td class='mono'>{escape((e.commit or '')[:12])}</td><td>{escape(e.message)}</td></tr>"
        for e in events
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _curve(version: Version) -> str:
    """The loss per iteration as an SVG line with its axes' extremes written out."""
    values = version.loss_curve
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / (len(values) - 1)
    points = " ".join(
        f"{PAD + i * step:.1f},{PAD + inner_h - (value - low) / span * inner_h:.1f}" for i, value in enumerate(values)
    )
    axis = (
        f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{PAD + inner_h}' stroke='#9ca3af'/>"
        f"<line x1='{PAD}' y1='{PAD + inner_h}' x2='{PAD + inner_w}' y2='{PAD + inner_h}' stroke='#9ca3af'/>"
    )
    labels = (
        f"<text x='{PAD - 4}' y='{PAD + 4}' font-size='10' text-anchor='end'>{high:.3g}</text>"
        f"<text x='{PAD - 4}' y='{PAD + inner_h}' font-size='10' text-anchor='end'>{low:.3g}</text>"
        f"<text x='{PAD}' y='{HEIGHT - 12}' font-size='10'>1</text>"
        f"<text x='{PAD + inner_w}' y='{HEIGHT - 12}' font-size='10' text-anchor='end'>{len(values)}</text>"
        f"<text x='{WIDTH / 2}' y='{HEIGHT - 2}' font-size='10' text-anchor='middle'>iteration</text>"
        f"<text x='10' y='{HEIGHT / 2}' font-size='10' transform='rotate(-90 10 {HEIGHT / 2})' "
        "text-anchor='middle'>loss</text>"
    )
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' "
        f"role='img' aria-label='loss curve of version {version.number}'>{axis}{labels}"
        f"<polyline fill='none' stroke='#2563eb' stroke-width='2' points='{points}'/></svg>"
    )
    return (
        f"<figure>{svg}<figcaption>version {version.number}: loss over {len(values)} iterations</figcaption></figure>"
    )
