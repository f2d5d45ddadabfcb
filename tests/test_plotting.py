"""optex.plotting: seed bands against a direct computation, figure files under a stable id."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optex import plotting


def _frame(values):
    """Tidy rows: one method, seeds 0..k-1, iterations 0..T-1, gap = values[seed][t]."""
    rows = [dict(method="optex", seed=s, iteration=t, gap=v) for s, row in enumerate(values) for t, v in enumerate(row)]
    return pd.DataFrame(rows)


def test_band_is_a_t_interval_on_the_log_scale():
    values = np.array([[1.0, 0.1], [2.0, 0.4], [4.0, 0.2]])
    summary = plotting.band(_frame(values)).set_index("iteration")
    for t in range(2):
        logs = np.log10(values[:, t])
        half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
        assert summary.loc[t, "center"] == pytest.approx(10 ** logs.mean())
        assert summary.loc[t, "low"] == pytest.approx(10 ** (logs.mean() - half))
        assert summary.loc[t, "high"] == pytest.approx(10 ** (logs.mean() + half))
        assert summary.loc[t, "seeds"] == 3


def test_band_on_a_linear_scale_is_the_arithmetic_mean():
    values = np.array([[1.0, -1.0], [3.0, 1.0]])
    summary = plotting.band(_frame(values), log=False).set_index("iteration")
    assert summary.loc[0, "center"] == pytest.approx(2.0)
    assert summary.loc[1, "center"] == pytest.approx(0.0)


def test_band_drops_non_positive_values_under_log():
    summary = plotting.band(_frame([[1.0], [0.0], [100.0]]))
    assert summary.loc[0, "center"] == pytest.approx(10.0)
    assert summary.loc[0, "seeds"] == 2


def test_band_plot_draws_one_line_per_method_in_order():
    frame = pd.concat([_frame([[1.0, 0.5], [1.0, 0.4]]).assign(method=m) for m in ("optex", "vanilla")])
    fig, ax = plt.subplots()
    plotting.band_plot(ax, frame, methods=("vanilla", "optex"))
    assert [line.get_label() for line in ax.get_lines()] == ["Vanilla", "OptEx"]
    assert ax.get_yscale() == "log"
    plt.close(fig)


def test_save_figure_writes_svg_png_and_csv(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    data = pd.DataFrame({"x": [0, 1], "y": [1, 0]})
    paths = plotting.save_figure(fig, "tiny-figure", data, tmp_path / "figures")
    plt.close(fig)
    assert {p.name for p in paths.values()} == {"tiny-figure.svg", "tiny-figure.png", "tiny-figure.csv"}
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert "<svg" in paths["svg"].read_text()
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), data)


def test_saving_the_same_figure_twice_gives_the_same_svg(tmp_path):
    texts = []
    for folder in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        texts.append(plotting.save_figure(fig, "same", pd.DataFrame(), tmp_path / folder)["svg"].read_text())
        plt.close(fig)
    assert texts[0] == texts[1]


@pytest.mark.parametrize("figure_id", ["Synthetic", "a_b", "-a", "a--b", "", "a b"])
def test_figure_ids_must_be_lower_case_words_joined_by_hyphens(figure_id):
    with pytest.raises(ValueError, match="figure_id"):
        plotting.check_figure_id(figure_id)
