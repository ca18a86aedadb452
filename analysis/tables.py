"""Number formatting and table rendering: the same frame as markdown and as LaTeX."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass
class Table:
    """A titled table of already-formatted strings, plus a note under it."""

    title: str
    frame: pd.DataFrame
    note: str = ""

    def markdown(self) -> str:
        header = "| " + " | ".join(map(str, self.frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in self.frame.columns) + "|"
        body = [
            "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
            for row in self.frame.itertuples(index=False)
        ]
        parts = [f"### {self.title}", "", header, rule, *body]
        if self.note:
            parts += ["", self.note]
        return "\n".join(parts) + "\n"

    def latex(self) -> str:
        body = self.frame.to_latex(
            index=False, escape=True, column_format="l" * self.frame.shape[1]
        )
        caption = _latex_symbols(_latex_escape(self.title))
        note = (
            f"\n\\\\[2pt]\\footnotesize {_latex_symbols(_latex_escape(self.note))}"
            if self.note
            else ""
        )
        body = _latex_symbols(body)
        return (
            "\\begin{table}[ht]\n\\centering\n\\small\n"
            f"\\caption{{{caption}}}\n{body}{note}\n\\end{{table}}\n"
        )


def num(x: object, digits: int = 4, signed: bool = False) -> str:
    """A number for a table: ``–`` for missing, ``∞`` for infinite."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return "–"
    x = float(x)
    if math.isinf(x):
        return "+∞" if x > 0 and signed else ("∞" if x > 0 else "−∞")
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def pm(mean: float, sd: float, digits: int = 4) -> str:
    return num(mean, digits) if pd.isna(sd) else f"{num(mean, digits)} ± {num(sd, digits)}"


def interval(low: float, high: float, digits: int = 4, signed: bool = True) -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    return f"[{num(low, digits, signed)}, {num(high, digits, signed)}]"


def pvalue(p: float) -> str:
    if pd.isna(p):
        return "–"
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def percent(x: float, signed: bool = True) -> str:
    if pd.isna(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:+.1f}%" if signed else f"{x:.1f}%"


def seconds(x: float) -> str:
    if pd.isna(x):
        return "–"
    if math.isinf(x):
        return "not reached"
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"


def count(x: float) -> str:
    if pd.isna(x):
        return "–"
    return "∞" if math.isinf(x) else f"{x:.1f}"


def _latex_escape(text: str) -> str:
    for old, new in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        text = text.replace(old, new)
    return text


# Unicode the tables use, as math that pdflatex also typesets.
_SYMBOLS = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "∞": r"$\infty$",
    "−": r"$-$",
    "≈": r"$\approx$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "α": r"$\alpha$",
    "–": "--",
    "·": r"$\cdot$",
}


def _latex_symbols(text: str) -> str:
    for old, new in _SYMBOLS.items():
        text = text.replace(old, new)
    return text
