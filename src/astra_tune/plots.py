"""Matplotlib figures for HTML reports: drawn off-screen, embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any


def new_figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure and axes on the Agg backend (no display needed; safe in servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def png_img(figure: Any) -> str:
    """An <img> tag holding the figure as an inline PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
