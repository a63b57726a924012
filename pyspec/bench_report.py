"""`pyspec bench`'s report: the table on the terminal, the JSON document and
the PNG chart, from the document that pyspec.bench.run returns."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import PyspecError

ANCHOR_PREFIX = "llama.cpp:"


def label(key: str) -> str:
    if key.startswith(ANCHOR_PREFIX):
        m = key[len(ANCHOR_PREFIX):]
        tool = {"none": "llama-completion", "ngram": "ngram-simple", "draft": "draft-simple"}[m]
        return f"llama.cpp {m} ({tool})"
    return f"pyspec {key}"


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PyspecError("--png needs matplotlib, which is not installed: pip install 'pyspec[bench]' "
                          "(or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


def _table(header: list, rows: list, right: set) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w[i]) if i in right else str(c).ljust(w[i])
                                 for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if i in right else "-" * (w[i] + 2) for i in range(len(w))) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _fmt_positions(acc: list, k: int = 4) -> str:
    if not acc:
        return "–"
    s = " ".join(f"{a:.2f}" for a in acc[:k])
    return s + (" …" if len(acc) > k else "")


def _fmt_x(v) -> str:
    return f"{v:.2f}x" if v is not None else "–"


def format_table(doc: dict) -> str:
    s = doc["settings"]
    o = s["options"]
    keys = [k for k in doc["methods"] if not k.startswith(ANCHOR_PREFIX)]
    exact_expected = doc["token_exact_expected"]
    head = (f"model {Path(s['model']).name}" + (f", draft {Path(s['draft_model']).name}" if s.get("draft_model") else "")
            + f"; {o['max_tokens']} tokens, temp {o['temperature']}, {s['threads']} threads, kernels {s['kernels']}, "
              f"draft length {o['draft_n_max']}, {s['reps']} reps (+{s['warmup']} warm-up), interleaved")
    rows = []
    for name, row in list(doc["results"].items()) + [("overall", doc["overall"])]:
        for k in keys:
            r = row[k]
            spec = k != "none"
            eq = r["equal_to_baseline"]
            eq_s = ("yes" if eq else "NO") if exact_expected else ("yes" if eq else "no (sampled)")
            rows.append([name, label(k), f"{r['tok_s']:.1f}", _fmt_x(r["speedup"]),
                         f"{r['mean_acceptance_length']:.2f}" if spec else "–",
                         _fmt_positions(r["acceptance_per_position"]) if spec else "–",
                         f"{100 * r['draft_share']:.0f}%" if spec else "–", f"{100 * r['verify_share']:.0f}%",
                         eq_s if spec else ("yes" if eq else "NO (not deterministic)")])
    out = [head, "", _table(["prompt", "method", "tok/s", "speedup", "mean acc. len", "acceptance by position",
                             "drafting", "verifying", "== none"], rows, {2, 3, 4, 6, 7})]
    if doc.get("noisy_runs"):
        out += ["", f"warning: {len(doc['noisy_runs'])} run(s) far (over 2x) from the median of their prompt and "
                    "method; the pooled figures include them (a busy machine? try more --reps):"]
        out += [f"  {n['prompt']} {label(n['method'])} rep {n['rep'] + 1}: {n['tok_s']:.1f} tok/s, median "
                f"{n['median_tok_s']:.1f}" for n in doc["noisy_runs"]]
    if doc.get("anchor_ratios"):
        arows = []
        for name, ratios in doc["anchor_ratios"].items():
            for m, r in ratios.items():
                acc = "–"
                if m != "none":
                    acc = f"{100 * (r['pyspec_acceptance_rate'] or 0):.0f}% / {100 * (r['llama_cpp_acceptance_rate'] or 0):.0f}%"
                arows.append([name, m, f"{r['pyspec_tok_s']:.1f}", f"{r['llama_cpp_tok_s']:.1f}",
                              _fmt_x(r["tok_s_ratio"]), _fmt_x(r["pyspec_speedup"]), _fmt_x(r["llama_cpp_speedup"]),
                              _fmt_x(r.get("speedup_ratio")) if m != "none" else "–", acc])
        a = doc["anchor"]
        out += ["", f"Anchor: llama.cpp {a.get('llama_cpp_commit')} (llama-completion, llama-speculative-simple; "
                    "same prompts and settings, stock kernels); ratios are pyspec / llama.cpp:", "",
                _table(["prompt", "method", "pyspec tok/s", "llama.cpp tok/s", "pyspec/llama.cpp", "pyspec speedup",
                        "llama.cpp speedup", "speedup ratio", "acceptance pyspec / llama.cpp"], arows,
                       {2, 3, 4, 5, 6, 7})]
    return "\n".join(out)


def write_png(doc: dict, path) -> Path:
    """Grouped bars: tok/s per prompt (and overall) and method, anchors included."""
    Figure, FigureCanvasAgg = require_matplotlib()
    keys = doc["methods"]
    groups = list(doc["results"]) + ["overall"]
    vals = {k: [doc["results"][g][k]["tok_s"] if g != "overall" else doc["overall"][k]["tok_s"] for g in groups]
            for k in keys}
    width = 0.8 / len(keys)
    fig = Figure(figsize=(min(16.0, max(6.5, 0.32 * len(groups) * len(keys) + 2.0)), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    colors = {"none": "#7f7f7f", "ngram": "#1f77b4", "draft": "#2ca02c"}
    for i, k in enumerate(keys):
        m = k[len(ANCHOR_PREFIX):] if k.startswith(ANCHOR_PREFIX) else k
        xs = [g + (i - (len(keys) - 1) / 2) * width for g in range(len(groups))]
        anchor = k.startswith(ANCHOR_PREFIX)
        bars = ax.bar(xs, vals[k], width * 0.95, label=label(k), color=colors.get(m, None),
                      alpha=0.45 if anchor else 0.95, hatch="//" if anchor else None,
                      edgecolor="black" if anchor else None, linewidth=0.4)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("generated tokens/s")
    s, o = doc["settings"], doc["settings"]["options"]
    ax.set_title(f"{Path(s['model']).name}: {o['max_tokens']} tokens, {s['threads']} threads, temp {o['temperature']}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2 if len(keys) > 3 else 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def write_json(doc: dict, path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return out
