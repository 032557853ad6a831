"""A hospital's CSV for regression and survival: the target columns are read, checked and named
in every error; the node config's task pin holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from client.data import HospitalDataError, load_csv
from client.local_data import TaskConfig, load_hospital_data
from client.node_check import NodeCheckError, check_data
from client.targets import TASK_NAMES, TargetColumns
from models.tasks import TASK_NAMES as MODEL_TASKS

SURVIVAL = TargetColumns("survival", time="months", event="relapse")


def table(path, rows: int = 40, **columns) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(60, 10, rows), "marker": rng.normal(size=rows)})
    for name, values in columns.items():
        frame[name] = values
    frame.to_csv(path, index=False)
    return str(path)


def test_a_regression_table_gives_float_targets_and_every_other_column_as_a_feature(tmp_path):
    stay = np.round(np.linspace(1.5, 20.0, 40), 1)
    data = load_csv(table(tmp_path / "a.csv", stay=stay), "stay", targets=TargetColumns("regression", "stay"))
    assert (data.task, data.num_classes, data.num_features) == ("regression", 1, 2)
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == stay.tolist()


def test_a_survival_table_gives_time_and_event_and_keeps_both_out_of_the_features(tmp_path):
    months = np.arange(1.0, 41.0)
    relapse = np.tile([1, 0], 20)
    data = load_csv(table(tmp_path / "a.csv", months=months, relapse=relapse), "unused", targets=SURVIVAL)
    y = np.concatenate([data.y_train, data.y_test])
    assert data.num_features == 2 and y.shape == (40, 2)
    assert sorted(y[:, 0].tolist()) == months.tolist() and y[:, 1].sum() == 20
    assert data.y_test[:, 1].sum() == len(data.y_test) / 2  # the split is stratified by event


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ({"months": np.arange(40.0)}, r"a\.csv: missing column\(s\) \['relapse'\]"),
        ({"relapse": np.ones(40)}, r"a\.csv: missing column\(s\) \['months'\]"),
        ({"months": np.ones(40), "relapse": np.full(40, 2)}, r"event column .relapse. has values \[2\.0\]"),
        ({"months": np.arange(40.0) - 5, "relapse": np.ones(40)}, "time column 'months' has negative values"),
        ({"months": ["soon"] * 40, "relapse": np.ones(40)}, "column 'months' is not numeric"),
    ],
)
def test_a_bad_survival_table_is_refused_naming_the_file_and_the_column(tmp_path, columns, error):
    with pytest.raises(HospitalDataError, match=error):
        load_csv(table(tmp_path / "a.csv", **columns), "unused", targets=SURVIVAL)


def test_a_regression_table_without_its_target_column_names_the_file_and_the_column(tmp_path):
    path = table(tmp_path / "site.csv", stay=np.ones(40))
    with pytest.raises(HospitalDataError, match=r"site\.csv: missing column\(s\) \['los'\]"):
        load_csv(path, "los", targets=TargetColumns("regression", "los"))


def test_the_node_config_pins_the_task_and_names_the_columns(tmp_path):
    path = table(tmp_path / "a.csv", months=np.arange(1.0, 41.0), relapse=np.tile([1, 0], 20))
    node = {"data-path": path, "task": "survival", "time-column": "months", "event-column": "relapse"}
    data = load_hospital_data(TaskConfig.from_config({"task": "survival", "seed": 1}), node)
    assert data.task == "survival" and data.num_features == 2
    with pytest.raises(ValueError, match="data are for task=survival; the run asks for regression"):
        load_hospital_data(TaskConfig.from_config({"task": "regression"}), node)


def test_the_daemon_checks_a_survival_table_before_it_starts(tmp_path):
    path = table(tmp_path / "a.csv", months=np.arange(1.0, 41.0), relapse=np.tile([1, 0], 20))
    summary = check_data(path, num_features=2, targets=SURVIVAL)
    assert (summary.train_examples + summary.test_examples, summary.num_features) == (40, 2)
    with pytest.raises(NodeCheckError, match=r"missing column\(s\) \['relapse'\]"):
        check_data(table(tmp_path / "b.csv", months=np.arange(40.0)), targets=SURVIVAL)


def test_the_daemon_offers_the_tasks_models_know():
    assert TASK_NAMES == MODEL_TASKS
