"""The scale-out runner's summary and cost model, on a hand-made timing table."""
import math

import pandas as pd
import pytest

from optex.experiments import scaling


def timings():
    rows = []
    for setup, world, proxy, evaluation, update, gather in [("vmap", 1, 0.010, 0.030, 0.020, 0.0),
                                                            ("distributed", 1, 0.010, 0.041, 0.020, 0.001),
                                                            ("distributed", 2, 0.011, 0.024, 0.021, 0.004)]:
        for iteration, jitter in enumerate((0.0, 0.5, -0.1)):  # the median drops the 0.5 outlier
            rows.append(dict(setup=setup, world=world, threads=1, iteration=iteration, loss=1.0, dim=10,
                             time_proxy=proxy * (1 + jitter), time_eval=evaluation * (1 + jitter),
                             time_update=update * (1 + jitter), allgather_s=gather, parallelism=4,
                             load_average=0.1))
    return pd.DataFrame(rows)


def test_summary_takes_medians_and_compares_with_one_rank():
    table = scaling.summary(timings()).set_index(["setup", "world"])
    assert table.loc[("distributed", 1), "total_s"] == pytest.approx(0.071)
    assert table.loc[("distributed", 2), "total_s"] == pytest.approx(0.056)
    assert table.loc[("distributed", 2), "speedup"] == pytest.approx(0.071 / 0.056)


def test_cost_model_splits_evaluation_from_the_serial_part():
    model = scaling.cost_model(timings(), worlds=(1, 2, 4)).set_index("world")
    evaluation, serial = 0.041 - 0.001, 0.030  # E excludes W = 1's all-gather; S = proxy + update
    assert model.loc[1, "predicted_s"] == pytest.approx(evaluation + serial + 0.001)
    assert model.loc[2, "predicted_s"] == pytest.approx(evaluation / 2 + serial + 0.004)
    # W = 4 was not measured: one process per rank, the all-gather extrapolated from W = 2 by (W-1)/W.
    assert model.loc[4, "predicted_s"] == pytest.approx(evaluation / 4 + serial + 0.004 * (3 / 4) / (1 / 2))
    assert math.isnan(model.loc[4, "measured_s"]) and model.loc[2, "measured_s"] == pytest.approx(0.056)


def test_cost_model_needs_the_one_rank_run():
    frame = timings()
    with pytest.raises(ValueError, match="world 1"):
        scaling.cost_model(frame[frame.world != 1])


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="setups"):
        scaling.Config(setups=("threads",))
    with pytest.raises(ValueError, match="worlds"):
        scaling.Config(worlds=(0,))
    with pytest.raises(ValueError, match="device"):
        scaling.Config(device="cuda")


def test_model_reading_says_when_the_measurement_misses_the_model():
    model = scaling.cost_model(timings(), worlds=(1, 2))
    assert "within 20%" in scaling.model_reading(model)  # 0.056 s measured against 0.054 s predicted
    slow = model.assign(measured_s=model["measured_s"] * [1.0, 2.0])
    assert "2.07× the prediction" in scaling.model_reading(slow)  # 0.112 / 0.054
    assert "not checked" in scaling.model_reading(model[model.world == 1])
